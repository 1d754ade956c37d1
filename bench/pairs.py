"""Deterministic, varied (query, document) pairs for the benchmarks: same seed, same pairs, same tokens.

Queries and documents are built from a fixed English word list with some Chinese phrases, emoji,
numbers and punctuation mixed in, grouped as several documents per query (as a re-ranking job is).
Nothing here depends on anything but the standard library, so the GPU machine can import it too.
"""

from __future__ import annotations

import random

from rerankq.prompt import Pair

_WORDS = """
the of and to in is was for on that with as by at from his her this which or an are be it not have
had were but one all their there been has more its who also new first two may after time into other
some only over such years most made used when these many than then would state city part world known
school later year during three through while both under between where being since until well under
system data model search query result document retrieval ranking relevance score vector index engine
network learning training language neural layer attention token sequence batch memory cache server
river mountain village island forest church castle bridge harbour railway station market festival
music album song film series episode novel author painter museum library garden temple palace coast
team season league match player coach club final goal record stadium championship tournament victory
protein cell gene enzyme species plant animal bacteria virus disease treatment patient hospital drug
energy power solar wind battery engine motor vehicle aircraft rocket satellite orbit planet galaxy star
law court judge policy government election minister parliament council president treaty border army
history century ancient empire kingdom dynasty war battle revolution colonial medieval modern culture
price market trade company bank finance investment growth economy industry product customer service
water air soil climate weather rain snow temperature ocean lake valley desert island bay peninsula
quickly slowly carefully often rarely usually always never sometimes perhaps however therefore although
red green blue black white large small long short high low early late young old north south east west
""".split()
_CHINESE = [
    "机器学习", "搜索引擎", "自然语言处理", "北京", "上海的天气", "人工智能", "文档排序", "数据库",
    "长江", "历史", "经济增长", "中文分词", "深度学习模型", "信息检索", "你好世界",
]  # fmt: skip
_EMOJI = ["🙂", "🚀", "🔥", "📄", "🇨🇳", "👍🏽", "❤️", "🧪", "🌍", "✨"]
_PUNCT = [",", ",", ",", ";", ":", " -", "."]


def _text(rng: random.Random, n_words: int) -> str:
    parts: list[str] = []
    sentence_left = rng.randint(6, 20)
    capital = True
    for _ in range(n_words):
        r = rng.random()
        if r < 0.03:
            word = rng.choice(_CHINESE)
        elif r < 0.045:
            word = rng.choice(_EMOJI)
        elif r < 0.07:
            word = str(rng.randint(1, 2030))
        else:
            word = rng.choice(_WORDS)
        if capital:
            word, capital = word.capitalize(), False
        parts.append(word)
        sentence_left -= 1
        if sentence_left == 0:
            parts[-1] += "."
            sentence_left, capital = rng.randint(6, 20), True
        elif rng.random() < 0.06:
            parts[-1] += rng.choice(_PUNCT)
    return " ".join(parts)


def make_pairs(
    n_pairs: int,
    seed: int = 0,
    docs_per_query: int = 16,
    query_words: tuple[int, int] = (3, 25),
    doc_words: tuple[int, int] = (20, 400),
) -> list[Pair]:
    """``n_pairs`` pairs, ``docs_per_query`` consecutive documents for each query; word counts uniform."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    query = ""
    for i in range(n_pairs):
        if i % docs_per_query == 0:
            query = _text(rng, rng.randint(*query_words))
            if rng.random() < 0.3:
                query += "?"
        pairs.append(Pair(query, _text(rng, rng.randint(*doc_words))))
    return pairs
