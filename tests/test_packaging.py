"""The wheel ships the packages and the specs; specs load through importlib.resources."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_wheel_contains_packages_and_specs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("fpnas_zoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("fpnas_zoo", "search", "hub", "arch_specs"):
        assert f"{package}/__init__.py" in names
    specs_in_repo = {str(p.relative_to(ROOT)) for p in (ROOT / "arch_specs").rglob("*.json")}
    assert specs_in_repo and specs_in_repo <= names


def test_specs_are_found_through_importlib_resources():
    from fpnas_zoo.spec import bundled_spec_files

    files = {p.name for p in bundled_spec_files()}
    assert "fpnasnet.json" in files


def test_each_paper_has_one_year_in_the_package_metadata_readme_and_model_cards():
    """FPNAS appeared at ICCV 2019 (arXiv 2018), FP-NAS at CVPR 2021: the package description, the README and the
    model cards' BibTeX give each paper the year of its venue, the same everywhere."""
    import re

    from hub.card import CITATIONS

    (description,) = re.findall(r'^description = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    readme = (ROOT / "README.md").read_text()
    for family, author, venue in (("FPNAS", "Cui", "ICCV"), ("FP-NAS", "Yan", "CVPR")):
        (in_readme,) = set(re.findall(rf"\*\*{family}\*\* — {author} et al\., .*?, {venue} (\d{{4}})", readme))
        assert re.search(rf"{family} \({author} et al\. (\d{{4}})\)", description)[1] == in_readme, family
        assert re.search(r"year\s*=\s*\{(\d{4})\}", CITATIONS[family])[1] == in_readme, family
