"""Random text-to-image pipelines built in code (``meshforge models random t2i``), for smoke tests.

:func:`write_random_t2i` writes a :class:`diffusers.FluxPipeline` — the real classes
(:class:`~diffusers.FluxTransformer2DModel`, :class:`~diffusers.AutoencoderKL`,
:class:`~diffusers.FlowMatchEulerDiscreteScheduler`, :class:`transformers.CLIPTextModel`,
:class:`transformers.T5EncoderModel`) at tiny sizes, as diffusers' own pipeline tests build them — with
``save_pretrained``, so ``--t2i-model DIR`` loads it exactly like a downloaded model. Nothing is downloaded:
both tokenizers are built in code (:func:`char_tokenizer`: one token per printable ASCII character, a
:class:`transformers.PreTrainedTokenizerFast` over a ``tokenizers`` WordLevel model).

A ``meshforge_t2i.json`` beside ``model_index.json`` gives the folder's defaults (64² pictures, 2 steps,
guidance 0) and its licence, read by :func:`meshforge.t2i.load_text_to_image`.

With random weights the picture is noise: the pipeline is for checking that every stage runs and that a
picture without an object is refused, not for looking at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError, require

__all__ = ["SIZES", "TINY_DEFAULTS", "char_tokenizer", "tiny_flux_pipeline", "write_random_t2i"]

SIZES = ("tiny",)

#: the defaults written into the tiny folder's ``meshforge_t2i.json``
TINY_DEFAULTS: dict[str, Any] = {
    "license": "MIT (random weights written by meshforge)",
    "non_commercial": False,
    "steps": 2,
    "guidance": 0.0,
    "size": 64,
}


def char_tokenizer(model_max_length: int, *, pad: str, eos: str, bos: str | None = None) -> Any:
    """A tokenizer built in code: one token per printable ASCII character (others → ``<unk>``), lower-cased.

    Args:
        model_max_length: the tokenizer's ``model_max_length`` (CLIP: 77; T5: 512).
        pad, eos, bos: the special tokens' spellings (``bos`` None: none is added).

    Returns:
        A :class:`transformers.PreTrainedTokenizerFast` (save it with ``save_pretrained``).
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [pad, eos, "<unk>"] + ([bos] if bos else [])
    vocab = {tok: i for i, tok in enumerate(specials)}
    for code in range(32, 127):
        ch = chr(code)
        if ch.lower() == ch and ch not in vocab:
            vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    single = (f"{bos} " if bos else "") + f"$A {eos}"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, vocab[t]) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    )
    extra = {"bos_token": bos} if bos else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        pad_token=pad,
        eos_token=eos,
        unk_token="<unk>",
        **extra,
    )


def tiny_flux_pipeline(seed: int = 0) -> Any:
    """A tiny random :class:`diffusers.FluxPipeline` (about 0.2 M parameters), built on the CPU in float32.

    Sizes follow diffusers' ``tests/pipelines/flux/test_pipeline_flux.py``: a transformer of one double and
    one single block (2 heads of 16), a one-level VAE with one latent channel (packed 2×2 into the
    transformer's 4 input channels), CLIP and T5 encoders of width 32.

    Args:
        seed: the ``torch.manual_seed`` the weights are drawn with.

    Raises:
        MissingDependency: diffusers or transformers is not installed.
    """
    require("diffusers", "text to image", "t2i")
    from . import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok = char_tokenizer(77, pad="<|endoftext|>", eos="<|endoftext|>", bos="<|startoftext|>")
    t5_tok = char_tokenizer(512, pad="<pad>", eos="</s>")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            hidden_act="gelu",
            vocab_size=len(clip_tok),
            max_position_embeddings=77,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
        )
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
        vae=vae,
    )


def write_random_t2i(
    output: str | os.PathLike[str],
    size: str = "tiny",
    seed: int = 0,
    *,
    on_model: Callable[[str, int], None] | None = None,
) -> Path:
    """Write a random text-to-image pipeline folder (``save_pretrained`` layout + ``meshforge_t2i.json``).

    Args:
        output: the folder to write (created; an existing non-empty folder is refused).
        size: ``"tiny"`` (the only size: a full-size FLUX.1-schnell is 12 B parameters; see
            ``benchmarks/t2i_gpu.py`` for that).
        seed: the weights' random seed.
        on_model: called as ``on_model(name, n_parameters)`` once the pipeline is written.

    Returns:
        The folder (pass it as ``--t2i-model DIR``).

    Raises:
        InputError: unknown size, or the folder exists and is not empty.
        MissingDependency: diffusers or transformers is not installed.
    """
    if size not in SIZES:
        raise InputError(f"unknown size {size!r} for t2i (choices: {', '.join(SIZES)})")
    folder = Path(output)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{folder} exists and is not an empty folder: choose a new -o DIR")
    pipe = tiny_flux_pipeline(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    (folder / "meshforge_t2i.json").write_text(json.dumps(TINY_DEFAULTS, indent=2) + "\n")
    if on_model is not None:
        n = sum(p.numel() for m in pipe.components.values() if hasattr(m, "parameters") for p in m.parameters())
        on_model(f"FluxPipeline ({size})", int(n))
    return folder
