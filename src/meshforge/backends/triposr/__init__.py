"""TripoSR backend: a clean-room implementation that loads the official ``stabilityai/TripoSR`` checkpoint.

Modules (torch is imported only by :mod:`.model`, :mod:`.render` and when a backend is built):

* :mod:`.config` — the official ``config.yaml`` and the DINO ViT config, parsed without omegaconf or torch.
* :mod:`.model` — the network (ViT encoder, triplane transformer, up-sampler, NeRF decoder, triplane queries).
* :mod:`.render` — the reference's volume rendering (parity checks, previews).
* :mod:`.preprocess` — grey compositing and the reference's framing (numpy).
* :mod:`.loading` — weights from a folder or the Hugging Face cache.
* :mod:`.backend` — :class:`~.backend.TripoSRBackend` and its field, in meshforge's canonical frame.

Sources: Tochilkin et al. 2024 (TripoSR); Hong et al. 2023 (LRM); Caron et al. 2021 (DINO); Dosovitskiy et al.
2021 (ViT).
"""
