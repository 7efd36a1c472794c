"""FIND (Zou et al., "Interfacing Foundation Models' Embeddings", NeurIPS 2024) as a ROS-free torch library.

- :mod:`find_ros.model.config`: ``FindConfig`` and its parts (JSON round trip);
- :mod:`find_ros.model.encoders`: transformers vision / language encoders (``from_pretrained(path)``);
- :mod:`find_ros.model.pixel_decoder`, :mod:`~find_ros.model.sampler`, :mod:`~find_ros.model.interface`,
  :mod:`~find_ros.model.heads`: the FIND pieces (the per-task attention table is ``interface.ATTENTION_TABLE``);
- :mod:`find_ros.model.find`: ``FindModel`` (all tasks, ``save_pretrained`` / ``from_pretrained``);
- :mod:`find_ros.model.losses`: ``find_losses``; :mod:`find_ros.model.grounder`: ``FindGrounder``.

Submodules are imported on demand (``from find_ros.model.find import FindModel``).
"""
