"""transformers reference engine: the model card's recipe (softmax over the last position's no/yes logits,
given as their difference, the log-odds, whose sigmoid it is)."""

from __future__ import annotations

from collections.abc import Sequence

from rerankq.settings import Settings


class HfEngine:
    name = "hf"

    def __init__(self, settings: Settings, model_path: str, dtype: str, yes_id: int, no_id: int):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()
        self.yes_id, self.no_id = yes_id, no_id
        self.batch_tokens = settings.hf_batch_tokens

    def _batches(self, prompts: Sequence[list[int]]) -> list[list[int]]:
        """Indices grouped by length so padding stays small, each batch within the token budget."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            if current and (len(current) + 1) * len(prompts[i]) > self.batch_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def log_odds(self, prompts: Sequence[list[int]]) -> list[float]:
        """logit(yes) − logit(no) at the last position: softmax over (no, yes) is its sigmoid."""
        torch = self.torch
        scores = [0.0] * len(prompts)
        with torch.inference_mode():
            for batch in self._batches(prompts):
                width = max(len(prompts[i]) for i in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):  # left padding: the last position is every prompt's last token
                    n = len(prompts[i])
                    ids[row, width - n :] = torch.tensor(prompts[i])
                    mask[row, width - n :] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    logits_to_keep=1,
                ).logits[:, -1, :]
                last = logits.float()  # the model card's softmax runs in float32: so does the difference
                raw = (last[:, self.yes_id] - last[:, self.no_id]).tolist()
                for row, i in enumerate(batch):
                    scores[i] = raw[row]
        return scores

    def close(self) -> None:
        del self.model
