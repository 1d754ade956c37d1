"""Can vLLM (CPU build) score Qwen3-VL-Reranker here? A tiny random Qwen3-VL (Qwen3-VL-2B's config scaled down:
hidden 64, 2 text and 2 vision layers, heads of 32, mrope sections [6, 5, 5], deepstack at both vision layers,
patch 16, merge 2) with rerankq's Qwen3 tokenizer (it has the vision tokens), scored over one image document by
vLLM as ``Qwen3VLForSequenceClassification`` (no/yes, ``is_original_qwen3_reranker``) and by transformers
(logit(yes) − logit(no) at the last position).

    PYTHONPATH=bench/qwen3_vl_cpu/site VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 \\
        python bench/qwen3_vl_cpu/probe.py /tmp/tiny-qwen3-vl

The prompt is a stand-in with the reranker's parts (system line, <Instruct>, <Query>, <Document> with the
image's vision tokens), not yet checked against the model's own reranker code."""

from __future__ import annotations

import sys
from pathlib import Path

TEXT = dict(
    vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, head_dim=32, max_position_embeddings=262144, rms_norm_eps=1e-6, tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5], "mrope_interleaved": True},
    initializer_range=0.05, bos_token_id=151643, eos_token_id=151645, hidden_act="silu", attention_bias=False,
)  # fmt: skip
VISION = dict(
    depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=2304, deepstack_visual_indexes=[0, 1],
    hidden_act="gelu_pytorch_tanh", in_channels=3, initializer_range=0.05,
)  # fmt: skip
SYSTEM = 'Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<Instruct>: Retrieve images relevant to the query.\n"
    "<Query>: a red square\n<Document>: <|vision_start|><|image_pad|><|vision_end|>a picture<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)


def build(directory: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from producer.tiny_model import write_tokenizer

    config = Qwen3VLConfig(
        text_config=TEXT, vision_config=VISION, image_token_id=151655, video_token_id=151656,
        vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=True,
        architectures=["Qwen3VLForConditionalGeneration"],
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen3VLForConditionalGeneration(config).to(torch.float32).eval().save_pretrained(str(directory))
    write_tokenizer(directory)
    image = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )  # fmt: skip
    video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video).save_pretrained(str(directory))


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from vllm import LLM, PoolingParams

    directory = Path(sys.argv[1])
    if not (directory / "config.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        build(directory)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    processor = AutoProcessor.from_pretrained(str(directory))
    inputs = processor(text=[PROMPT], images=[image], return_tensors="pt")
    model = Qwen3VLForConditionalGeneration.from_pretrained(str(directory), dtype=torch.float32).eval()
    yes, no = processor.tokenizer.convert_tokens_to_ids(["yes", "no"])
    with torch.inference_mode():
        last = model(**inputs).logits[0, -1].float()
    reference = (last[yes] - last[no]).item()
    llm = LLM(
        model=str(directory), runner="pooling", dtype="float32", max_model_len=4096, enforce_eager=True,
        limit_mm_per_prompt={"image": 1, "video": 0},
        hf_overrides={"architectures": ["Qwen3VLForSequenceClassification"], "classifier_from_token": ["no", "yes"],
                      "is_original_qwen3_reranker": True},
    )  # fmt: skip
    out = llm.classify(
        [{"prompt": PROMPT, "multi_modal_data": {"image": image}}],
        pooling_params=PoolingParams(task="classify", use_activation=False),
    )
    got = out[0].outputs.probs[0]
    print(f"prompt tokens {inputs['input_ids'].shape[1]}, image grid {inputs['image_grid_thw'].tolist()}")
    print(f"transformers log-odds {reference!r}, vLLM {got!r}, |diff| {abs(got - reference):.3g}")


if __name__ == "__main__":
    main()
