"""AdamW parameter groups: weight decay on weight matrices and kernels only.

Decay shrinks a parameter toward 0. That is a sensible prior for the weight matrices of linear and conv
layers, and a harmful one for parameters whose scale or position *is* their meaning: norm gains and
biases, learned embeddings (queries, position embeddings), prompt tokens, the background prototypes and
the logit scale. Mask2Former, ZegCLIP (mmseg ``paramwise_cfg``: ``norm`` / ``ln`` decay_mult 0) and timm
(``param_groups_weight_decay``) leave those out; so do we.

The rule is by name and shape, so it covers modules added later without a list to keep up to date:
a trainable parameter gets **no decay** when

- it has at most one dimension (biases, norm gains, scalars such as ``log_logit_scale``), or
- it belongs to a normalisation layer or an ``nn.Embedding``, or
- a word of its own (leaf) name, split at ``_``, is one of ``NO_DECAY_WORDS`` (``query_embed``,
  ``visual_pos``, ``bg_prototypes``, ``prompts``, ``log_logit_scale``...).

Only the leaf name counts: ``classifier.embed.1.weight`` (a Linear inside a block named ``embed``) decays.

Learning-rate multipliers (``lr_multiplier``) are by name prefix, as mmsegmentation's
``paramwise_cfg.custom_keys``: each group carries ``lr_mult`` and the trainer sets a group's learning rate to
``lr_mult`` times the scheduled one.
"""

from __future__ import annotations

import logging
from typing import Mapping

from torch import nn

__all__ = ["NO_DECAY_WORDS", "decays", "lr_multiplier", "parameter_groups"]

logger = logging.getLogger(__name__)

NO_DECAY_WORDS = frozenset({
    "embed", "embeds", "embedding", "embeddings", "pos", "position", "query", "queries", "prompt", "prompts",
    "token", "tokens", "prototype", "prototypes", "scale", "bias", "gamma", "beta",
})
"""Words of a parameter's leaf name that mark it as an embedding-like parameter (no weight decay)."""

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
          nn.LocalResponseNorm, nn.Embedding)


def decays(name: str, param: nn.Parameter, owner: nn.Module) -> bool:
    """Whether parameter ``name`` (its full dotted name) of module ``owner`` gets weight decay (see module doc)."""
    leaf = name.rsplit(".", 1)[-1]
    if param.dim() <= 1 or isinstance(owner, _NORMS):
        return False
    return not (set(leaf.lower().split("_")) & NO_DECAY_WORDS)


def lr_multiplier(name: str, multipliers: Mapping[str, float]) -> float:
    """The factor of the longest prefix in ``multipliers`` that is ``name`` or a dotted parent of it, else 1.0.

    ``lr_multiplier("extractor.side.stages.0.0.weight", {"extractor.side": 0.1})`` is 0.1;
    ``"extractor.sidecar.w"`` does not match ``"extractor.side"`` (prefixes end at a dot).
    """
    best = max((prefix for prefix in multipliers if _under(name, prefix)), key=len, default="")
    return float(multipliers[best]) if best else 1.0


def _under(name: str, prefix: str) -> bool:
    """Whether dotted parameter name ``name`` is ``prefix`` or lies under it (``a.b.c`` under ``a.b``, not ``a.bc``)."""
    return name == prefix or name.startswith(prefix + ".")


def parameter_groups(model: nn.Module, params: list[nn.Parameter], weight_decay: float,
                     no_decay: bool = True, lr_multipliers: Mapping[str, float] | None = None) -> list[dict]:
    """AdamW parameter groups over ``params`` (a subset of ``model``'s parameters, e.g. the trainable ones).

    Args:
        model: the module that owns ``params`` (names and owning modules come from it).
        params: the parameters to optimise; those with ``requires_grad=False`` are left out.
        weight_decay: decay of the decayed group.
        no_decay: apply the rule; ``False`` puts everything in the decayed group.
        lr_multipliers: ``{name prefix: factor}`` (``lr_multiplier``); ``None`` or empty: every factor 1.

    Returns:
        One group per (decay, factor) that has parameters: the decayed groups first, each in order of
        factor: ``{"params": [...], "weight_decay": weight_decay or 0.0, "lr_mult": factor, "names": [...]}``.
        Without multipliers that is ``[decayed, free]`` as before. ``names`` and ``lr_mult`` are extra keys
        of a group, which torch keeps.

    Raises:
        ValueError: a parameter of ``params`` that ``model`` does not own, or a prefix of ``lr_multipliers``
            that matches none of the parameters to optimise (naming it).
    """
    multipliers = dict(lr_multipliers or {})
    wanted = {id(p) for p in params if p.requires_grad}
    groups: dict[tuple[bool, float], tuple[list[nn.Parameter], list[str]]] = {}
    seen: set[int] = set()
    used: set[str] = set()
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if id(param) not in wanted or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{leaf}" if module_name else leaf
            used.update(p for p in multipliers if _under(name, p))
            key = (decays(name, param, module) if no_decay else True, lr_multiplier(name, multipliers))
            group = groups.setdefault(key, ([], []))
            group[0].append(param)
            group[1].append(name)
    missing = wanted - seen
    if missing:
        raise ValueError(f"{len(missing)} parameters to optimise are not parameters of the model")
    unused = sorted(set(multipliers) - used)
    if unused:
        raise ValueError(f"lr_multipliers prefixes {unused} match no parameter to optimise; prefixes are dotted "
                         "parameter names such as 'extractor.side'")
    order = sorted(groups, key=lambda k: (not k[0], k[1]))
    result = [{"params": groups[k][0], "weight_decay": weight_decay if k[0] else 0.0, "lr_mult": k[1],
               "names": groups[k][1]} for k in order]
    logger.info("weight decay %g on %d tensors, none on %d tensors; lr multipliers %s", weight_decay,
                sum(len(groups[k][0]) for k in order if k[0]), sum(len(groups[k][0]) for k in order if not k[0]),
                multipliers or "none")
    return result
