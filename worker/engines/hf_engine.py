"""transformers reference engine, read as each family's reference reads it: Qwen3-Reranker's card (softmax
over the last position's no/yes logits, given as their difference, the log-odds, whose sigmoid it is);
cross-encoders' sequence-classification head (its one logit, whose sigmoid CrossEncoder reports)."""

from __future__ import annotations

from collections.abc import Sequence

from rerankq.families import Family
from rerankq.families.qwen3_reranker import FAMILY as QWEN3
from rerankq.settings import Settings


class HfEngine:
    name = "hf"

    def __init__(
        self, settings: Settings, model_path: str, dtype: str, yes_id: int | None = None, no_id: int | None = None,
        family: Family = QWEN3,
    ):  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.classifier = family.head == "sequence-classification"
        auto = AutoModelForSequenceClassification if self.classifier else AutoModelForCausalLM
        if family.load_reference is not None:  # a family whose config.json transformers cannot read as it is
            self.model = family.load_reference(model_path, getattr(torch, dtype)).to(self.device)
        else:
            self.model = auto.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
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

    def log_odds(self, prompts: Sequence[list[int]], type_starts: Sequence[int | None] | None = None) -> list[float]:
        """logit(yes) − logit(no) at the last position: softmax over (no, yes) is its sigmoid. Cross-encoders:
        the head's one logit."""
        if self.classifier:
            return self._classify(prompts, type_starts)
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

    def _classify(self, prompts: Sequence[list[int]], type_starts: Sequence[int | None] | None) -> list[float]:
        """Right padding with an attention mask, token type ids 1 from each document's start, as the
        tokenizer hands a pair to transformers."""
        torch = self.torch
        scores = [0.0] * len(prompts)
        pad = int(self.model.config.pad_token_id or 0)
        with torch.inference_mode():
            for batch in self._batches(prompts):
                width = max(len(prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                types = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    n = len(prompts[i])
                    ids[row, :n] = torch.tensor(prompts[i])
                    mask[row, :n] = 1
                    start = type_starts[i] if type_starts is not None else None
                    if start is not None:
                        types[row, start:n] = 1
                extra = {"token_type_ids": types.to(self.device)} if type_starts is not None else {}
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **extra).logits
                raw = logits[:, 0].float().tolist()
                for row, i in enumerate(batch):
                    scores[i] = raw[row]
        return scores

    def close(self) -> None:
        del self.model
