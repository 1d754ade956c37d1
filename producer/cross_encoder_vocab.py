"""Small tokenizers for tiny cross-encoder checkpoints, trained offline from a fixed corpus: a WordPiece
vocabulary for BERT and a Unigram one for XLM-RoBERTa, each then wrapped by transformers' own BERT and
XLM-RoBERTa tokenizer classes, which lay out the real checkpoints' pipelines (normalizer, pre-tokenizer,
pair template) around it. Deterministic: the same files on every machine."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

WORDS = (
    "search index ranking query document passage relevance vector neural model retrieval answer question "
    "knowledge base nightly batch worker score chunk the of and to in is for on with as by at from that this "
    "capital city country river paris beijing china france berlin water energy light system data language "
    "café naïve résumé emoji quotes marks tabs newlines spaces chat log assistant think legal statutes memory"
).split()
# Letters of the scripts the tests write (CJK, Arabic, Greek, Cyrillic, emoji): in the alphabet, so not unknown.
EXTRA = "量子计算是一种基于力学原理的模型。يمكنكاستخدامالأمر🚀éïü—“”ΕλληνικάκείμεναρусскийтекстΑΒΓабвгдежз"
ALPHABET = sorted(set(string.printable.strip() + EXTRA))
VOCAB_SIZE = 1200


def corpus(seed: int = 0, lines: int = 4000) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6))))
        yield " ".join(words)


def bert_vocab() -> dict[str, int]:
    """A WordPiece vocabulary trained as BERT's pipeline splits text ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        initial_alphabet=ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    return tok.get_vocab()


def unigram_vocab() -> list[tuple[str, float]]:
    """A Unigram vocabulary with XLM-RoBERTa's layout (<s> 0, <pad> 1, </s> 2, <unk> 3, pieces, <mask> last)."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    vocab = [(piece, float(score)) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    return [*vocab, ("<mask>", 0.0)]
