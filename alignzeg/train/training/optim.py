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
"""

from __future__ import annotations

import logging

from torch import nn

__all__ = ["NO_DECAY_WORDS", "decays", "parameter_groups"]

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


def parameter_groups(model: nn.Module, params: list[nn.Parameter], weight_decay: float,
                     no_decay: bool = True) -> list[dict]:
    """AdamW parameter groups over ``params`` (a subset of ``model``'s parameters, e.g. the trainable ones).

    Args:
        model: the module that owns ``params`` (names and owning modules come from it).
        params: the parameters to optimise; those with ``requires_grad=False`` are left out.
        weight_decay: decay of the decayed group.
        no_decay: apply the rule; ``False`` puts everything in the decayed group.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay, "names": [...]},
        {"params": [...], "weight_decay": 0.0, "names": [...]}]`` (empty groups are dropped). ``names`` is
        informational; torch keeps extra keys of a group.
    """
    wanted = {id(p) for p in params if p.requires_grad}
    groups: dict[bool, tuple[list[nn.Parameter], list[str]]] = {True: ([], []), False: ([], [])}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if id(param) not in wanted or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{leaf}" if module_name else leaf
            group = groups[decays(name, param, module) if no_decay else True]
            group[0].append(param)
            group[1].append(name)
    missing = wanted - seen
    if missing:
        raise ValueError(f"{len(missing)} parameters to optimise are not parameters of the model")
    result = [{"params": ps, "weight_decay": wd, "names": names}
              for wd, (ps, names) in ((weight_decay, groups[True]), (0.0, groups[False])) if ps]
    logger.info("weight decay %g on %d tensors, none on %d tensors", weight_decay, len(groups[True][0]),
                len(groups[False][0]))
    return result
