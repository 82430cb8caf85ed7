"""Behaviour metrics: functions from logits to one number per prompt.

* Logit difference (Wang et al. 2023, "Interpretability in the Wild"):
  ``logit[pos_token] - logit[neg_token]`` at the last position, in nats (logit units). For the
  gender-occupation suite this is ``logit(" she") - logit(" he")``.

Every metric returns a ``[batch]`` tensor so that effects keep per-prompt values for statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from jaxtyping import Float
from torch import Tensor

from circuits.model import single_token_id
from circuits.suites import Suite

#: A behaviour metric: logits in, one value per prompt out.
Metric: TypeAlias = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]]


@dataclass(frozen=True)
class LogitDiff:
    """``logits[:, -1, positive] - logits[:, -1, negative]`` (logit units).

    Source: the logit-difference metric of Wang et al. 2023 (IOI) used throughout activation patching.

    Attributes:
        positive: Token id whose logit counts positively (e.g. `` she``).
        negative: Token id whose logit counts negatively (e.g. `` he``).
    """

    positive: int
    negative: int

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, " batch"]:
        """Evaluate on logits.

        Args:
            logits: Model output.

        Returns:
            One logit difference per prompt, at the last position.
        """
        last = logits[:, -1, :]
        return last[:, self.positive] - last[:, self.negative]


def metric_for_suite(model: Any, suite: Suite) -> LogitDiff:
    """Build a suite's metric for a model's tokenizer.

    Args:
        model: A model with a tokenizer.
        suite: The suite.

    Returns:
        The suite's logit-difference metric.

    Raises:
        ValueError: A target is not a single token for this tokenizer.
    """
    m = suite.spec.metric
    return LogitDiff(positive=single_token_id(model, m.positive), negative=single_token_id(model, m.negative))
