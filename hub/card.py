"""Model cards (README.md) for exported weights: YAML front matter the Hub reads, then the facts."""
from __future__ import annotations

import json

from fpnas_zoo import Counts
from fpnas_zoo.registry import provenance_note
from fpnas_zoo.spec import ModelSpec

DATASETS = {1000: "imagenet-1k", 10: "cifar10", 100: "cifar100"}

CITATIONS = {
    "FPNAS": """@inproceedings{cui2019fpnas,
  title     = {Fast and Practical Neural Architecture Search},
  author    = {Cui, Jiequan and Chen, Pengguang and Li, Ruiyu and Liu, Shu and Shen, Xiaoyong and Jia, Jiaya},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2019}
}""",
    "FP-NAS": """@inproceedings{yan2021fpnas,
  title     = {{FP-NAS}: Fast Probabilistic Neural Architecture Search},
  author    = {Yan, Zhicheng and Dai, Xiaoliang and Zhang, Peizhao and Tian, Yuandong and Wu, Bichen and Feiszli, Matt},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2021}
}""",
}

def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def model_card(spec: ModelSpec, counts: Counts, repo: str, tag: str, num_classes: int,
               metrics: dict | None = None, dataset: str | None = None, onnx: bool = False) -> str:
    family = "FP-NAS" if "FP-NAS" in spec.source["paper"] else "FPNAS"
    dataset = dataset or (metrics or {}).get("dataset") or DATASETS.get(num_classes, "custom")
    license_ = next((w["license"] for t, w in spec.weights.items() if t == tag), "apache-2.0")
    front = ["---", "tags:", "- image-classification", "- timm", "- fpnas-zoo", "library_name: timm",
             f"license: {_yaml_str(license_ if license_ != 'unknown' else 'other')}", "datasets:",
             f"- {_yaml_str(dataset)}"]
    if metrics:
        front += ["model-index:", f"- name: {_yaml_str(repo)}", "  results:", "  - task:",
                  "      type: image-classification", "    dataset:", f"      name: {_yaml_str(dataset)}",
                  f"      type: {_yaml_str(dataset)}", "    metrics:", "    - type: accuracy",
                  f"      value: {metrics['top1']:.4f}", "      name: top-1"]
        if isinstance(metrics.get("top5"), (int, float)):
            front += ["    - type: top_5_accuracy", f"      value: {metrics['top5']:.4f}", "      name: top-5"]
    front.append("---")
    details = [
        f"- **Architecture:** `{spec.name}` ({provenance_note(spec)}).",
        f"- **Paper:** {spec.source['paper']}" + (f", {spec.source['table']}" if spec.source["table"] else "") + ".",
        f"- **Params:** {counts.params:,} ({counts.params_without_bn:,} without BatchNorm).",
        f"- **Mult-adds:** {counts.mult_adds / 1e6:.2f}M ({counts.mult_adds_conv / 1e6:.2f}M in convolutions) at "
        f"{spec.input_size[1]}x{spec.input_size[2]}, measured with torch.utils.flop_counter by `fpnas_zoo`.",
        f"- **Classes:** {num_classes}; **dataset:** {dataset}; **weights tag:** `{tag}`.",
    ]
    if metrics:
        details.append(f"- **Top-1:** {metrics['top1']:.2f}%" + (
            f", top-5 {metrics['top5']:.2f}%" if isinstance(metrics.get("top5"), (int, float)) else "")
            + " (as measured by the exporter's metrics file).")
    if spec.paper["top1"] is not None:
        details.append(f"- **The paper's top-1 for its network:** {spec.paper['top1']} ({spec.paper['source']}).")
    usage = f"""```python
import timm
import fpnas_zoo  # registers the zoo's architectures with timm (timm has no plugin mechanism)

model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()
data_config = timm.data.resolve_data_config(model=model)
transform = timm.data.create_transform(**data_config, is_training=False)
```

`pip install fpnas-zoo` provides `fpnas_zoo`. As a backbone: `timm.create_model("hf-hub:{repo}", pretrained=True,
features_only=True)`."""
    if onnx:
        usage += """

`model.onnx` (the same weights, dynamic batch, exported with `python -m fpnas_zoo export`) runs with ONNX Runtime;
its metadata holds the preprocessing (input_size, mean, std, interpolation, crop_pct, num_classes):

```python
import json, onnxruntime as ort

session = ort.InferenceSession("model.onnx")
meta = {k: json.loads(v) if k not in ("model", "interpolation", "crop_mode") else v
        for k, v in session.get_modelmeta().custom_metadata_map.items()}
logits = session.run(None, {"input": images})[0]   # images: float32 (N, *meta["input_size"]), normalised
```"""
    body = [
        f"# Model card for {repo}", "",
        f"{spec.name}: an image classification model from the fpnas-zoo, {provenance_note(spec)}.", "",
        "## Model Details", "", *details, "", "## Model Usage", "", usage, "", "## Citation", "", "```bibtex",
        CITATIONS[family], "```", "",
    ]
    return "\n".join(front + [""] + body)
