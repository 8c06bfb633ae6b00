"""A model's preprocessing, declared once in its config and used by a config that does not merge that file.

The CT model's preprocessing (MONAI transforms) is declared in ``configs/ct.json``, which training merges
(``configs/train.json`` + ``configs/ct.json`` + ``configs/ct_generated.json``). ``configs/inference.json`` registers
CT pairs with the shipped CT model by default, alone, so it needs the same chain without merging ``ct.json``.
MONAI's own way to reuse another file's section, the ``"%configs/ct.json#preprocessing"`` macro, opens the path
against the working directory, so ``run inference --bundle_root /path/to/bundle`` started elsewhere would not find
it. :func:`declared_preprocessing` reads the section from the bundle root instead and parses it with that file's own
values, overridden by the caller's (the network grid, which ``configs/ct_generated.json`` sets for the shipped model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from scripts.io.errors import InputError

__all__ = ["declared_preprocessing"]


def declared_preprocessing(bundle_root: str | Path, config: str = "ct.json", **values: Any) -> Any:
    """The ``preprocessing`` of ``<bundle_root>/configs/<config>``, instantiated with that file's values, ``values``
    (e.g. ``image_size``, ``hu_window``) overriding them; ``bundle_root`` is set too, for paths inside the chain.

    Raises InputError (one ``error:`` line on the command line) naming the file and the option to set when the
    config is not there (a wrong ``--bundle_root``), and KeyError when it declares no ``preprocessing``.
    """
    path = Path(bundle_root) / "configs" / config
    if not path.is_file():
        raise InputError(
            f"{path}: no such file; the model's preprocessing is declared there: set --bundle_root to the bundle's "
            "folder (the one holding configs/ and models/)"
        )
    parser = ConfigParser(ConfigParser.load_config_file(str(path)))
    if "preprocessing" not in parser.get():
        raise KeyError(f"{path} declares no 'preprocessing'")
    parser["bundle_root"] = str(bundle_root)
    for key, value in values.items():
        parser[key] = value
    return parser.get_parsed_content("preprocessing", instantiate=True)
