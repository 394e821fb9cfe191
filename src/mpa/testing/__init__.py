"""Tiny offline models for tests, smoke runs and speed scripts: random-init checkpoints of real HF architectures
(`tiny`: LLaVA and Idefics3, plus a tiny teacher trained to name colours; `families`: 13 VLM families; `templates`:
their chat templates). Nothing here downloads anything; the scripted backend (`mpa.backends.scripted`) covers
tests that need no weights at all."""
