"""The pre-labeler as an HTTP service: a Label Studio ML backend (``/health``, ``/setup``, ``/predict``) plus
``/score`` (CLIP similarities of an image and prompts, with plain-language bands)."""
