"""The TSV format plugin for sluice, in plain Python.

This package parses IANA text/tab-separated-values files and maps their
records to requests. It imports nothing from the component bindings, so
CPython runs its unit tests directly. The modules ``app`` and ``format``
beside it adapt it to the ``sluice:plugin/format`` exports.
"""

from .config import CONFIG_KEYS, Config, ConfigError, ConfigKey, parse_config
from .parser import FileError, Parser

NAME = "tsv"
VERSION = "0.1.0"
EXTENSIONS = ("tsv",)
# The bytes that end each record in a dead-letter file.
RECORD_SEPARATOR = b"\n"

__all__ = [
    "CONFIG_KEYS",
    "Config",
    "ConfigError",
    "ConfigKey",
    "EXTENSIONS",
    "FileError",
    "NAME",
    "Parser",
    "RECORD_SEPARATOR",
    "VERSION",
    "parse_config",
]
