"""The component's entry point for componentize-py: the functions of the
``sluice:plugin/format`` interface.

componentize-py takes the class ``Format`` from this module for the
interface's functions, and the ``Parser`` class from the module ``format``,
named after the interface, for its resource. An exception that escapes an
export traps the instance, so every failure is turned into the error value
that the interface offers.
"""

from typing import List, Optional, Tuple

import wit_world.exports
from componentize_py_types import Err
from wit_world.imports import types

import format as format_exports
import sluice_tsv

# Built once at import, which componentize-py runs at build time, so that
# `info` cannot fail at run time.
INFO = types.PluginInfo(
    name=sluice_tsv.NAME,
    version=sluice_tsv.VERSION,
    extensions=list(sluice_tsv.EXTENSIONS),
    config_keys=[
        types.ConfigKey(key.name, key.description, key.required) for key in sluice_tsv.CONFIG_KEYS
    ],
    record_separator=sluice_tsv.RECORD_SEPARATOR,
)


class Format(wit_world.exports.Format):
    def info(self) -> types.PluginInfo:
        return INFO

    def configure(self, config: List[Tuple[str, str]]) -> None:
        """Validate the configuration for the parsers created after it.

        Raises Err with a ConfigError that names the key and the fix.
        """
        try:
            format_exports.CONFIG = sluice_tsv.parse_config(config)
            return
        except sluice_tsv.ConfigError as error:
            rejected = types.ConfigError(error.key, error.message)
        # A bug in the plugin, which the host reports with the key empty.
        except Exception as error:  # noqa: BLE001
            rejected = types.ConfigError("", format_exports.internal_error("configure", error))
        raise Err(rejected)

    def classify(self, response: types.Response) -> Optional[types.Verdict]:
        """Leave every response to the host's rules."""
        return None
