"""FIND training losses: a linear combination of mask, matching, grounding, retrieval and pixel terms."""
from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from find_ros.model.heads import FindOutput
from find_ros.model.sampler import PromptBatch

__all__ = ["LossWeights", "FindTargets", "find_losses", "match_queries", "LossError"]


class LossError(ValueError):
    """Targets that do not fit the output; the message names the shapes."""


@dataclasses.dataclass
class LossWeights:
    """Weights of the linear combination (X-Decoder / SEEM / FIND style: masks 5 + 5, classes 2)."""

    mask_bce: float = 5.0
    """Per-pixel BCE of entity masks (grounding / interleaved grounding) and matched object masks."""
    mask_dice: float = 5.0
    """Dice loss of the same masks."""
    objectness: float = 2.0
    """BCE of object-query objectness (matched = 1, unmatched = 0, down-weighted by ``no_object``)."""
    no_object: float = 0.1
    """Relative weight of unmatched queries in the objectness BCE."""
    grounding: float = 2.0
    """Contrastive grounding: entity prompt embedding vs its grounding query (all entities of the batch as
    negatives) and vs the object query matched to its target (the paper's Q_sem x Q_sem^T matching)."""
    score: float = 0.5
    """BCE of the entity match score against 'predicted mask IoU > 0.5'."""
    retrieval: float = 1.0
    """Symmetric InfoNCE between image embeddings and caption embeddings."""
    pixel: float = 1.0
    """Balanced BCE of pixel embeddings x entity embedding vs the entity mask (makes 3D field queries work)."""
    aux: float = 1.0
    """Multiplier of the mask terms of earlier interface layers (deep supervision); 0 disables them."""


@dataclasses.dataclass
class FindTargets:
    """Ground truth at the mask resolution (h, w) of the output."""

    entity_masks: torch.Tensor | None
    """(B, E, h, w) float {0, 1} target mask per instruction entity, or None."""
    entity_valid: torch.Tensor | None
    """(B, E) bool, False on padding entities."""
    object_masks: torch.Tensor | None
    """(B, M, h, w) float {0, 1} every object of the image (for query matching), or None."""
    object_valid: torch.Tensor | None
    """(B, M) bool."""
    captions: PromptBatch | None = None
    """Caption prompts (``FindModel.encode_text``), one per image, for the retrieval term."""


def _fit(targets: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, M, H, W) targets as area fractions on an (h, w) grid (deep supervision on a coarser grid)."""
    if tuple(targets.shape[-2:]) == tuple(hw):
        return targets
    return F.adaptive_avg_pool2d(targets, hw)


def _bce_dice(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE and dice over N masks (N, P)."""
    if logits.shape[0] == 0:
        z = logits.sum() * 0.0
        return z, z
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
    p = logits.sigmoid()
    dice = 1.0 - (2.0 * (p * target).sum(1) + 1.0) / (p.sum(1) + target.sum(1) + 1.0)
    return bce.mean(), dice.mean()


@torch.no_grad()
def match_queries(mask_logits: torch.Tensor, object_logits: torch.Tensor | None, targets: torch.Tensor,
                  valid: torch.Tensor) -> torch.Tensor:
    """Greedy one-to-one matching of queries to target masks by BCE + dice (+ objectness) cost.

    ``mask_logits`` (B, Q, P), ``targets`` (B, M, P), ``valid`` (B, M) -> (B, M) int64 query index per
    target (-1 for invalid targets). Greedy on the global cost minimum, M steps vectorised over the batch.
    """
    x = mask_logits.float()
    t = targets.float()
    B, Q, P = x.shape
    M = t.shape[1]
    bce = F.softplus(x).mean(-1)[:, :, None] - torch.einsum("bqp,bmp->bqm", x, t) / P
    p = x.sigmoid()
    dice = 1.0 - (2.0 * torch.einsum("bqp,bmp->bqm", p, t) + 1.0) / (p.sum(-1)[:, :, None] + t.sum(-1)[:, None, :] + 1.0)
    cost = bce + dice
    if object_logits is not None:
        cost = cost - 0.5 * object_logits.float().sigmoid()[:, :, None]
    cost = cost.masked_fill(~valid[:, None, :], float("inf"))
    out = torch.full((B, M), -1, dtype=torch.long, device=x.device)
    b = torch.arange(B, device=x.device)
    for _ in range(min(M, Q)):
        v, idx = cost.view(B, -1).min(1)
        ok = torch.isfinite(v)
        if not bool(ok.any()):
            break
        qi, mi = idx // M, idx % M
        out[b[ok], mi[ok]] = qi[ok]
        cost[b, qi, :] = float("inf")
        cost[b, :, mi] = float("inf")
    return out


def _info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned unit vectors a (N, D) and b (N, D)."""
    if a.shape[0] < 2:
        return (a * b).sum() * 0.0
    logits = scale * a @ b.T
    lab = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab))


def _object_losses(output: FindOutput, targets: FindTargets, *, w: LossWeights,
                   out: dict[str, torch.Tensor]) -> torch.Tensor:
    """``object_bce``/``object_dice``/``objectness`` into ``out``; returns the final layer's (B, M) query matching."""
    h, wd = output.object_masks.shape[-2:]
    om = targets.object_masks.to(output.object_masks.dtype)
    ov = targets.object_valid.bool()
    if om.shape[-2:] != (h, wd) or om.shape[0] != output.object_masks.shape[0]:
        raise LossError(f"object targets {tuple(om.shape)} do not fit object masks {tuple(output.object_masks.shape)}")
    layers = [(output.object_masks, output.object_logits, 1.0)]
    layers += [(a, None, w.aux) for a in output.aux_object_masks] if w.aux > 0 else []
    bce_sum = dice_sum = 0.0
    for i, (ml, ol, lw) in enumerate(layers):
        x = ml.flatten(2)
        t = _fit(om, ml.shape[-2:]).flatten(2)
        idx = match_queries(x, ol, t, ov)
        if i == 0:
            matched = idx
        bi, mi = ov.nonzero(as_tuple=True)
        qi = idx[bi, mi]
        bce, dice = _bce_dice(x[bi, qi], t[bi, mi])
        bce_sum = bce_sum + lw * bce
        dice_sum = dice_sum + lw * dice
    out["object_bce"] = bce_sum
    out["object_dice"] = dice_sum
    tgt = torch.zeros_like(output.object_logits)
    bi, mi = ov.nonzero(as_tuple=True)
    tgt[bi, matched[bi, mi]] = 1.0
    wt = torch.where(tgt > 0, 1.0, w.no_object)
    out["objectness"] = (F.binary_cross_entropy_with_logits(output.object_logits, tgt, reduction="none") * wt).sum() / wt.sum()
    return matched


def _grounding(output: FindOutput, targets: FindTargets, *, bi: torch.Tensor, ei: torch.Tensor, t: torch.Tensor,
               es: torch.Tensor, matched: torch.Tensor | None) -> torch.Tensor:
    """Contrastive grounding of the valid entities (``bi``, ``ei``; target masks ``t`` (N, P), embeddings ``es``
    (N, D)): entity embedding vs its grounding query, averaged with vs the object query matched to its target."""
    scale = output.logit_scale
    g = _info_nce(es, output.entity_query_sem[bi, ei], scale)
    if matched is not None and bi.numel():
        # the object each entity refers to (best IoU among the image's objects) and its matched query
        om = targets.object_masks.to(t.dtype).flatten(2)[bi]  # (N, M, P)
        inter = torch.einsum("np,nmp->nm", t, om)
        union = t.sum(1, keepdim=True) + om.sum(2) - inter
        iou = (inter / union.clamp_min(1e-6)).masked_fill(~targets.object_valid.bool()[bi], -1.0)
        q = matched[bi, iou.argmax(1)]
        ok = q >= 0
        if bool(ok.any()):
            logits = scale * torch.einsum("nd,nqd->nq", es[ok], output.object_sem[bi[ok]])
            g = 0.5 * (g + F.cross_entropy(logits, q[ok]))
    return g


def _pixel(output: FindOutput, *, bi: torch.Tensor, t: torch.Tensor, es: torch.Tensor) -> torch.Tensor:
    """Balanced BCE of pixel embeddings x entity embedding ``es`` (N, D) vs the entity masks ``t`` (N, P)."""
    if not bi.numel():
        return output.pixel_sem.sum() * 0.0
    px = output.pixel_sem.flatten(1, 2)[bi]  # (N, P, D)
    logit = output.logit_scale * torch.einsum("npd,nd->np", px, es)
    bce = F.binary_cross_entropy_with_logits(logit, t, reduction="none")
    pos = (bce * t).sum(1) / t.sum(1).clamp_min(1.0)
    neg = (bce * (1 - t)).sum(1) / (1 - t).sum(1).clamp_min(1.0)
    return (0.5 * (pos + neg)).mean()


def _entity_losses(output: FindOutput, targets: FindTargets, *, w: LossWeights, out: dict[str, torch.Tensor],
                   matched: torch.Tensor | None) -> None:
    """``entity_bce``/``entity_dice``/``grounding``/``score``/``pixel`` into ``out``."""
    h, wd = output.object_masks.shape[-2:]
    em = targets.entity_masks.to(output.entity_masks.dtype)
    ev = targets.entity_valid.bool()
    E = output.entity_masks.shape[1]
    if em.shape[1] != E or em.shape[-2:] != (h, wd) or em.shape[0] != output.entity_masks.shape[0]:
        raise LossError(f"entity targets {tuple(em.shape)} do not fit entity masks {tuple(output.entity_masks.shape)}")
    ev = ev & output.entity_valid
    bi, ei = ev.nonzero(as_tuple=True)
    t = em.flatten(2)[bi, ei]
    bce_sum = dice_sum = 0.0
    layers = [(output.entity_masks, 1.0)] + ([(a, w.aux) for a in output.aux_entity_masks] if w.aux > 0 else [])
    for ml, lw in layers:
        ta = t if ml.shape[-2:] == (h, wd) else _fit(em, ml.shape[-2:]).flatten(2)[bi, ei]
        bce, dice = _bce_dice(ml.flatten(2)[bi, ei], ta)
        bce_sum = bce_sum + lw * bce
        dice_sum = dice_sum + lw * dice
    out["entity_bce"] = bce_sum
    out["entity_dice"] = dice_sum
    es = output.entity_sem[bi, ei]
    out["grounding"] = _grounding(output, targets, bi=bi, ei=ei, t=t, es=es, matched=matched)
    with torch.no_grad():
        pred = (output.entity_masks.flatten(2)[bi, ei] > 0).to(t.dtype)
        inter = (pred * t).sum(1)
        iou = inter / (pred.sum(1) + t.sum(1) - inter).clamp_min(1.0)
        good = (iou > 0.5).to(t.dtype)
    sl = output.entity_score_logits[bi, ei]
    out["score"] = F.binary_cross_entropy_with_logits(sl, good) if bi.numel() else sl.sum() * 0.0
    out["pixel"] = _pixel(output, bi=bi, t=t, es=es)


def find_losses(output: FindOutput, targets: FindTargets, *, weights: LossWeights) -> dict[str, torch.Tensor]:
    """Loss terms present for these targets, plus ``total`` (their weighted sum).

    Terms: ``entity_bce``/``entity_dice`` (entity masks, final + ``aux`` x earlier layers),
    ``object_bce``/``object_dice``/``objectness`` (object queries matched to object masks),
    ``grounding``, ``score``, ``pixel`` (need entity targets), ``retrieval`` (needs captions).
    """
    w = weights
    out: dict[str, torch.Tensor] = {}
    matched = None
    if targets.object_masks is not None:
        matched = _object_losses(output, targets, w=w, out=out)
    if targets.entity_masks is not None:
        _entity_losses(output, targets, w=w, out=out, matched=matched)
    if targets.captions is not None:
        cap = targets.captions.sentence
        if cap.shape[0] != output.image_sem.shape[0]:
            raise LossError(f"{cap.shape[0]} captions for {output.image_sem.shape[0]} images")
        out["retrieval"] = _info_nce(output.image_sem, cap, output.logit_scale)
    wmap = {"object_bce": w.mask_bce, "object_dice": w.mask_dice, "objectness": w.objectness,
            "entity_bce": w.mask_bce, "entity_dice": w.mask_dice, "grounding": w.grounding, "score": w.score,
            "pixel": w.pixel, "retrieval": w.retrieval}
    if not out:
        raise LossError("targets carry nothing to learn from (no object, entity or caption targets)")
    out["total"] = sum(wmap[k] * v for k, v in out.items())
    return out
