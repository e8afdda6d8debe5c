"""DINOv2 checkpoint conversion for :class:`EoMTViT` (placeholder until the converters land)."""


def adapt_vit_state(model, state_dict: dict, prefix: str) -> None:
    """Adapt DINOv2 weights in ``state_dict`` (keys under ``prefix``) to ``model`` in place."""
