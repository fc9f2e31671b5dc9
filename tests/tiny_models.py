"""Tiny random CLIP and BLIP checkpoints built from configs and saved to a folder: no download, real code paths.

``from_pretrained(folder)`` loads them exactly as it loads a hub checkpoint. Their weights are random, so their
scores mean nothing: tests use them for shapes, maths, caching and I/O, never for accuracy. ``size="base"`` builds
the real ViT-B/32 CLIP and BLIP-base architectures (still random), which have the real compute cost: benchmarks use
those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Size = Literal["tiny", "base"]


def _clip_tokenizer():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    tokens = [*alphabet, *(a + "</w>" for a in alphabet), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[])


def _bert_tokenizer():
    from transformers import BertTokenizer

    words = "a an the of on in with metal steel surface scratch crack dent stain photo close up picture rust oil"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {token: index for index, token in enumerate([*specials, *words.split(), *letters])}
    return BertTokenizer(vocab=vocab, bos_token="[DEC]")


def build_clip(folder: Path, *, size: Size = "tiny", image_size: int = 32, seed: int = 0) -> Path:
    """Save a random CLIP (model, tokenizer, PIL image processor) into ``folder`` and return it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer()
    if size == "base":
        config = CLIPConfig()
        image_size = config.vision_config.image_size
        config.text_config.bos_token_id = tokenizer.bos_token_id
        config.text_config.eos_token_id = tokenizer.eos_token_id
        config.text_config.pad_token_id = tokenizer.pad_token_id
    else:
        config = CLIPConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 77,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config=_tiny_vision(image_size),
            projection_dim=16,
        )
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _tiny_vision(image_size: int) -> dict[str, int]:
    """A two-layer ViT of width 32 on 8-pixel patches: the vision tower of the tiny CLIP and BLIP."""
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": 8,
    }


def build_blip(folder: Path, *, size: Size = "tiny", image_size: int = 32, seed: int = 0) -> Path:
    """Save a random BLIP captioner (model, tokenizer, PIL image processor) into ``folder`` and return it."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    torch.manual_seed(seed)
    tokenizer = _bert_tokenizer()
    text = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if size == "base":
        config = BlipConfig(text_config=text)
        image_size = config.vision_config.image_size
    else:
        text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        config = BlipConfig(
            text_config={**text, "encoder_hidden_size": 32},
            vision_config=_tiny_vision(image_size),
            projection_dim=16,
        )
    model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    folder = Path(folder)
    model.save_pretrained(folder)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
