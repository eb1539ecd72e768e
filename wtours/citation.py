"""How to cite the method and the corpus: one owner for the text that dataset and model cards carry.

The arXiv identifier is what the Hub links a card to its paper page by (it scans cards for arxiv.org links
and `arxiv:` tags)."""

from __future__ import annotations

ARXIV_ID = "2310.08584"
ARXIV_URL = f"https://arxiv.org/abs/{ARXIV_ID}"
PAPER_TITLE = "Is ImageNet worth 1 video? Learning strong image encoders from 1 long unlabelled video"
PAPER_AUTHORS = ("Shashanka Venkataramanan", "Mamshad Nayeem Rizve", "Jo\u00e3o Carreira", "Yuki M. Asano",
                 "Yannis Avrithis")
PAPER_VENUE = "International Conference on Learning Representations (ICLR)"
PAPER_YEAR = 2024

BIBTEX = f"""@inproceedings{{venkataramanan2024imagenet,
  title     = {{{PAPER_TITLE}}},
  author    = {{{' and '.join(PAPER_AUTHORS)}}},
  booktitle = {{{PAPER_VENUE}}},
  year      = {{{PAPER_YEAR}}},
  eprint    = {{{ARXIV_ID}}},
  archivePrefix = {{arXiv}},
  url       = {{{ARXIV_URL}}}
}}"""


def citation_section(why: str) -> str:
    """The cards' last section: `why` to cite the paper, then its BibTeX entry."""
    return f"## Citation\n\n{why}\n\n```bibtex\n{BIBTEX}\n```"
