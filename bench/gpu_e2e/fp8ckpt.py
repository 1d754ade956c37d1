"""An fp8 checkpoint made from a bf16 one, in the layout Qwen publishes its own FP8 models in
(Qwen3-*-FP8: `quant_method: fp8`, 128x128 block scales in `weight_scale_inv`, dynamic activations).

Only the decoder's linear layers (`*_proj.weight`) are quantized; embeddings, norms and `lm_head` stay
bf16. vLLM builds the reranker's yes/no score head from `lm_head` and never quantizes a head it derives
online (vllm/model_executor/models/adapters.py, `as_seq_cls_model`: quant_config None when
classifier_from_token is set), so this is "an fp8 checkpoint whose score head stays high precision".

  python bench/gpu_e2e/fp8ckpt.py --src /tmp/e2e/4b/ckpt-4b --dst /tmp/e2e/4b/ckpt-4b-fp8
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

BLOCK = 128


def quantize_blockwise(weight):  # noqa: ANN001, ANN201 (torch tensors; torch is imported lazily)
    """(fp8 weight, float32 scale per 128x128 block) with weight ~= fp8 * scale, as DeepSeek-V3/Qwen3-FP8 store it."""
    import torch

    fp8_max = torch.finfo(torch.float8_e4m3fn).max
    n, k = weight.shape
    if n % BLOCK or k % BLOCK:
        raise ValueError(f"shape {tuple(weight.shape)} is not a multiple of {BLOCK}")
    blocks = weight.float().reshape(n // BLOCK, BLOCK, k // BLOCK, BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / fp8_max
    q = (blocks / scale[:, None, :, None]).clamp(-fp8_max, fp8_max).to(torch.float8_e4m3fn)
    return q.reshape(n, k), scale.contiguous()


def convert(src: Path, dst: Path, device: str = "cpu") -> dict:
    from safetensors.torch import load_file, save_file

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    quantized = 0
    weight_map: dict[str, str] = {}
    for f in sorted(src.iterdir()):
        if f.suffix != ".safetensors":
            if f.is_file() and f.name not in ("config.json", "model.safetensors.index.json", "rerankq-bench.json"):
                shutil.copy(f, dst / f.name)
            continue
        out = {}
        for name, tensor in load_file(str(f), device=device).items():
            if ".layers." in name and name.endswith("_proj.weight"):
                q, scale = quantize_blockwise(tensor)
                out[name], out[name.removesuffix("weight") + "weight_scale_inv"] = q, scale
                quantized += 1
            else:
                out[name] = tensor
        save_file({k: v.contiguous().cpu() for k, v in out.items()}, str(dst / f.name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(out, f.name))
    index = src / "model.safetensors.index.json"
    if index.exists():
        meta = json.loads(index.read_text()).get("metadata", {})
        (dst / index.name).write_text(json.dumps({"metadata": meta, "weight_map": weight_map}, indent=1))
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [BLOCK, BLOCK]}  # fmt: skip
    (dst / "config.json").write_text(json.dumps(config, indent=1))
    return {"quantized_layers": quantized, "tensors": len(weight_map)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, type=Path)
    ap.add_argument("--dst", required=True, type=Path)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    t = time.monotonic()
    info = convert(args.src, args.dst, args.device)
    print(f"fp8 checkpoint at {args.dst}: {info}, {time.monotonic() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
