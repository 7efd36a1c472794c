"""FIND-Bench-style data from the simulated world: referring phrases, interleaved instructions, captions.

One sample = one rendered view of one sim scene at the model's input resolution with:

* per-object ground truth (instance image -> masks) for every visible object,
* a referring phrase per visible object, just specific enough to single it out among the visible
  objects (attributes first, then a spatial relation to a unique anchor: "the red cube left of the
  blue torus"); relations come from ground-truth geometry in the camera frame,
* an interleaved instruction over 1..``max_entities`` entities in which each entity's attribute words
  are replaced by a visual reference ``<k>`` with probability ``p_visual`` (its relation words stay:
  "the <0> left of the blue torus"); the reference is a crop + mask of an object of the same
  category and colour rendered from a *different* scene (the paper's retrieved replacement),
* a caption naming the visible objects left to right (retrieval gallery text).

One module per job:

* :mod:`.samples`: ``DataConfig``, ``SimSample`` and the annotation records;
* :mod:`.splits`: split seed ranges and the held-out (category, colour) pairs;
* :mod:`.grammar`: relations, referring phrases, captions, paraphrases, the vocabulary;
* :mod:`.dataset`: ``SimFindDataset`` (render + annotate, staged fallback scenes, references);
* :mod:`.shards`: the ``.npz`` shard cache (``build_shards``, ``ShardDataset``).
"""
from find_ros.model.data.dataset import SimFindDataset
from find_ros.model.data.grammar import (RELATIONS, make_caption, paraphrase, paraphrase_referring, referring_phrases,
                                         relation_matrix, vocabulary)
from find_ros.model.data.samples import DataConfig, DataError, Interleaved, ObjectInfo, Referring, SimSample
from find_ros.model.data.shards import ShardDataset, build_shards
from find_ros.model.data.splits import SPLIT_SEED_BASE, heldout_pairs, is_heldout_pair

__all__ = [
    "DataConfig",
    "DataError",
    "ObjectInfo",
    "Referring",
    "Interleaved",
    "SimSample",
    "SimFindDataset",
    "ShardDataset",
    "HELDOUT_PAIRS",
    "SPLIT_SEED_BASE",
    "RELATIONS",
    "vocabulary",
    "build_shards",
    "heldout_pairs",
    "is_heldout_pair",
    "make_caption",
    "paraphrase",
    "paraphrase_referring",
    "referring_phrases",
    "relation_matrix",
]


def __getattr__(name: str):
    # HELDOUT_PAIRS needs find_ros.sim (its open3d import: about 1 s): computed on first access only (PEP 562)
    if name == "HELDOUT_PAIRS":
        return heldout_pairs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
