"""Standard circuit tasks, generated from data written for the project (``circuits/suites/data/tasks/``).

* :func:`ioi` — indirect object identification (Wang et al. 2023, "Interpretability in the Wild"):
  the 15 BABA templates and their ABBA forms (the first two names swapped), single-token names; the
  corruption is IOI's ABC dataset (three names that are not A or B), metric ``logit(IO) − logit(S)``.
* :func:`greater_than` — Hanna et al. 2023 ("How does GPT-2 compute greater-than?"): "The war lasted
  from the year 17YY to the year 17"; corrupted with YY = 01. SmolLM2's tokenizer splits years digit
  by digit, so the next token is the end year's tens digit: the metric is ``P(tens digit > Y) −
  P(tens digit < Y)`` for the start year's tens digit ``Y`` (the paper's ``P(YY > XX) − P(YY ≤ XX)`` over
  two-digit tokens, at the digit level; years with ``Y`` = 0 or 9 leave one side empty and are skipped).
* :func:`factual_recall` — subject → attribute facts in the style of ROME's "known facts" (Meng et al.
  2022): each clean fact is paired with another fact of the same relation and prompt length, whose
  answer is the wrong answer; :func:`known_facts` keeps the facts a model completes correctly.
* induction — repeated random tokens (Olsson et al. 2022): ``[BOS, A, A]`` vs ``[BOS, B, A]``,
  the copying metric over the second copy; a token-level task, tokenised by :func:`circuits.probing.pairs.induction`.
"""

from __future__ import annotations

import json
import random
from functools import cache
from importlib import resources
from typing import Any

import torch

from circuits import model as M
from circuits.model import HookedLM
from circuits.suites.core import MetricSpec, PromptPair, Suite, _hash

_TASK_DIR = ("data", "tasks")


@cache
def _data(name: str) -> dict[str, Any]:
    return json.loads(resources.files("circuits.suites").joinpath(*_TASK_DIR, name).read_text(encoding="utf-8"))


def _split_groups(groups: list[str], eval_fraction: float, seed: int) -> set[str]:
    order = groups[:]
    random.Random(seed).shuffle(order)
    return set(order[: max(1, round(eval_fraction * len(order)))])


def ioi(*, per_template: int = 8, seed: int = 0, eval_fraction: float = 0.3) -> Suite:
    """The IOI suite: BABA and ABBA prompts, ABC corruption, ``logit(IO) − logit(S)``.

    Args:
        per_template: Prompts per template and order (names, place and object drawn at random).
        seed: Sampling seed.
        eval_fraction: Fraction of templates held out for ``eval`` (by template: both orders go together).

    Returns:
        The suite (group = template + order).
    """
    d = _data("ioi_names.json")
    rng = random.Random(seed)
    held = _split_groups(list(d["templates"]), eval_fraction, seed)
    records = []
    for t_index, template in enumerate(d["templates"]):
        for order in ("BABA", "ABBA"):
            form = template if order == "BABA" else template.replace("[B] and [A]", "[A] and [B]", 1)
            for _ in range(per_template):
                a, b, c, e, f = rng.sample(d["names"], 5)
                place, obj = rng.choice(d["places"]), rng.choice(d["objects"])

                def fill(x: str, y: str, z: str, io_first: str = form) -> str:
                    # io_first has [A] (IO) and [B] (S twice); the ABC corruption uses three distinct names.
                    s = io_first.replace("[PLACE]", place).replace("[OBJECT]", obj)
                    first_b = s.index("[B]")
                    s = s[:first_b] + y + s[first_b + 3 :]
                    return s.replace("[A]", x).replace("[B]", z)

                records.append(PromptPair(
                    clean=fill(a, b, b), corrupted=fill(c, e, f), answer=" " + a, wrong_answer=" " + b,
                    group=f"template {t_index} {order}", split="eval" if template in held else "build",
                    metadata={"io": a, "s": b, "order": order},
                ))
    content = {"task": "ioi", "per_template": per_template, "seed": seed, "eval_fraction": eval_fraction, "data": _hash(d)}
    return Suite(
        "ioi", "capability", MetricSpec(name="logit_diff"), tuple(records), _hash(content),
        description="Indirect object identification: complete 'Then, B and A went to the store. B gave a drink to' with A (IO), not B (S).",
        construction=d["construction"] + f" Generated with circuits.suites.tasks.ioi(per_template={per_template}, seed={seed}); corruption ABC.",
        split_rule=f"by template (seed {seed}, {len(held)} of {len(d['templates'])} templates held out)",
    )


def greater_than(*, per_noun: int = 4, seed: int = 0, eval_fraction: float = 0.3, century: int = 17) -> Suite:
    """The greater-than suite: "The NOUN lasted from the year CCYY to the year CC", corrupted with YY = 01.

    Pairs carry the start year's tens digit in ``metadata["tens"]``; the suite's metric is
    ``greater_than`` (:func:`circuits.probing.pairs.prepare`).

    Args:
        per_noun: Start years per noun (YY drawn from 10..89).
        seed: Sampling seed.
        eval_fraction: Fraction of nouns held out for ``eval``.
        century: The two leading digits.
    """
    d = _data("greater_than.json")
    rng = random.Random(seed)
    held = _split_groups(list(d["nouns"]), eval_fraction, seed)
    records = []
    for noun in d["nouns"]:
        for yy in rng.sample(range(10, 90), per_noun):
            def fill(y: int) -> str:
                return d["template"].replace("[NOUN]", noun).replace("[XX]", str(century)).replace("[YY]", f"{y:02d}")

            records.append(PromptPair(
                clean=fill(yy), corrupted=fill(1), answer="greater", wrong_answer="smaller", group=noun,
                split="eval" if noun in held else "build", metadata={"yy": f"{yy:02d}", "tens": str(yy // 10)},
            ))
    content = {"task": "greater-than", "per_noun": per_noun, "seed": seed, "century": century, "data": _hash(d)}
    return Suite(
        "greater-than", "capability", MetricSpec(name="greater_than"), tuple(records), _hash(content),
        description="Greater-than: after 'from the year 1732 to the year 17', the end year's tens digit should exceed 3.",
        construction=d["construction"] + f" Generated with circuits.suites.tasks.greater_than(per_noun={per_noun}, seed={seed}).",
        split_rule=f"by noun (seed {seed}, {len(held)} of {len(d['nouns'])} nouns held out)",
    )


def facts() -> list[dict[str, str]]:
    """The candidate facts (``subject``, ``prompt``, ``answer``, ``relation``)."""
    return list(_data("facts.json")["facts"])


def known_facts(model: HookedLM, candidates: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """The facts whose answer's first token is the model's greedy next token.

    Raises:
        ValueError: The model has no tokenizer.
    """
    out = []
    for f in candidates if candidates is not None else facts():
        first = M.tokenizer_of(model).encode(f["answer"], add_special_tokens=False)[0]
        with torch.no_grad():
            if int(M.run(model, M.tokens_of(model, f["prompt"])[None])[0, -1].argmax()) == first:
                out.append(f)
    return out


def factual_recall(model: HookedLM | None = None, *, seed: int = 0, eval_fraction: float = 0.3) -> Suite:
    """Factual-recall pairs: each fact against another fact of its relation with the same prompt length.

    Args:
        model: When given, only the facts it completes correctly (:func:`known_facts`), paired by its
            token lengths; otherwise every candidate, paired by character-level word counts.
        seed: Pairing and split seed.
        eval_fraction: Fraction of relations' facts held out for ``eval`` (split by subject).

    Returns:
        The suite (group = relation; answer = the fact's answer, wrong answer = the partner's).
    """
    pool = known_facts(model) if model is not None else facts()
    length = (lambda f: len(model.tokenizer.encode(f["prompt"]))) if model is not None else (lambda f: len(f["prompt"].split()))
    rng = random.Random(seed)
    records = []
    by_key: dict[tuple[str, int], list[dict[str, str]]] = {}
    for f in pool:
        by_key.setdefault((f["relation"], length(f)), []).append(f)
    for (relation, _), fs in sorted(by_key.items()):
        for i, f in enumerate(fs):
            partners = [g for g in fs if g["answer"] != f["answer"]]
            if not partners:
                continue
            g = rng.choice(partners)
            split = "eval" if rng.random() < eval_fraction else "build"
            records.append(PromptPair(
                clean=f["prompt"], corrupted=g["prompt"], answer=f["answer"], wrong_answer=g["answer"], group=relation,
                split=split, metadata={"subject": f["subject"], "corrupted_subject": g["subject"]},
            ))
    content = {"task": "factual-recall", "seed": seed, "facts": [f["prompt"] for f in pool]}
    return Suite(
        "factual-recall", "capability", MetricSpec(name="auto"), tuple(records), _hash(content),
        description="Factual recall: complete a subject's relation with its attribute ('The Eiffel Tower is located in the city of' -> ' Paris').",
        construction=_data("facts.json")["construction"] + (f" Kept: the {len(pool)} facts the model completes correctly." if model is not None else ""),
        split_rule=f"by record (seed {seed}, eval fraction {eval_fraction})",
    )
