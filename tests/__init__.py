"""Tests of mpa (tiny real models, offline)."""
