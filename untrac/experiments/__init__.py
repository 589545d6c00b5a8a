"""The paper's experiments, one module per notebook, over shared setup.

* :mod:`.setup` — the project tokenizer, the pretrained base model, cached attribution;
* :mod:`.synthetic` — Sec. 5.1 (notebook 01); :mod:`.corpora` — Sec. 5.2 (notebook 02);
* :mod:`.sensitivity` — Sec. 6 (notebook 03), through the resumable grids of :mod:`.sweep`;
* :mod:`.unlearning` — Attribute-to-Delete's unlearning evaluation (notebook 04), over the originals,
  oracles and datamodels of :mod:`.population`;
* :mod:`.regime` — which mini regime lifts the truth above its noise, judged without any method (notebook 05).
"""
