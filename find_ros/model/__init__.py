"""FIND (Zou et al., "Interfacing Foundation Models' Embeddings", NeurIPS 2024) as a ROS-free torch library.

- :mod:`find_ros.model.config`: ``FindConfig`` and its parts (JSON round trip);
- :mod:`find_ros.model.encoders`: transformers vision / language encoders (``from_pretrained(path)``);
- :mod:`find_ros.model.pixel_decoder`, :mod:`~find_ros.model.sampler`, :mod:`~find_ros.model.interface`,
  :mod:`~find_ros.model.heads`: the FIND pieces (the per-task attention table is ``interface.ATTENTION_TABLE``);
- :mod:`find_ros.model.find`: ``FindModel`` (all tasks, ``save_pretrained`` / ``from_pretrained``), with
  :mod:`~find_ros.model.find_build` (the tiny configs, checkpoint files);
- :mod:`find_ros.model.losses`: ``find_losses``; :mod:`find_ros.model.grounder`: ``FindGrounder``;
- :mod:`find_ros.model.train`: ``Trainer`` and ``find-ros train``, with :mod:`~find_ros.model.train_config`
  (``TrainConfig``) and :mod:`~find_ros.model.train_batches` (collation, batch losses, validation);
  :mod:`find_ros.model.data`: the simulated FIND-Bench-style data.

Submodules are imported on demand (``from find_ros.model.find import FindModel``).
"""
