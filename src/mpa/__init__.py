"""mpa — the Model Parity Aligner.

Improve a small vision-language model (the student) with a large one (the teacher) and unlabeled images:
annotate (PA) → identify (PI) → level (PL) → evaluate. See README.md and Penamakuri et al., EMNLP 2025
(arXiv 2509.16633).
"""

__version__ = "0.1.0"
