"""The component package: RegistryStack, Tls and DaemonMirror for Pulumi programs in any language.

`pulumi package add <this repository>` finds PulumiPlugin.yaml (`runtime: python`), installs
requirements.txt into `.venv` and starts the repository as a plugin. The Python language host
runs a plugin folder that has a `__main__.py` as `python <folder> <engine address>`
(pulumi/pulumi sdk/python/cmd/pulumi-language-python/main.go, RunPlugin). That
`__main__.py` is also this project's Pulumi program, which the language host starts through
pulumi-language-python-exec with a resource monitor already configured. So the program's
first line asks `serve_if_launched_as_plugin()`: with no monitor it serves the components and
exits; otherwise the program runs as before.

Serving is Pulumi's Python component provider host (pulumi.provider.experimental): it infers
the package schema from the type annotations of each component's `args` and outputs (analyzer.py),
answers GetSchema (the CLI generates the consumer's SDK from it) and Construct (a consumer's
`new RegistryStack(...)` builds the component here, its children registered with the
consumer's deployment).

What the host needs from a component (read in analyzer.py and component.py of pulumi 3.272,
the newest release; tests/test_component_package.py holds the components to it):

- `__init__(self, name, args: <Args>, opts)`: the parameter is named `args` and its
  annotation is a real type at runtime. `from __future__ import annotations` turns every
  annotation into a string, which the analyzer cannot read (`'str' object has no attribute
  '__mro__'`), so component and args modules must not use it.
- `<Args>` is a TypedDict: Construct hands the component a plain dict of the consumer's
  inputs under their Python names, never a dataclass instance. Optional keys are
  `NotRequired[...]`; a docstring under each key becomes its description.
- Field types: str, int, float, bool, `(str, Enum)` classes (values become schema enums;
  Construct passes the enum member), `list[...]`, `dict[str, ...]`, nested TypedDicts,
  `pulumi.Input[...]`, `Optional[...]`. No tuples and no other unions; a plain class arrives
  as a dict too.
- Values arrive as the consumer sent them: any `pulumi.Input[...]` field may be an Output
  (always so for a secret), and integers arrive as floats (8443.0), so validation accepts
  a float with no fraction where it wants an int.
- Outputs are class-level annotations (`build_url: pulumi.Output[str]`, a docstring under
  each); every public class-level annotation becomes an output, so attributes that are not
  outputs are annotated in `__init__`, not on the class.
- The schema cannot mark a property secret (the analyzer has no notion of it); secret
  values stay secret on the wire both ways, as Outputs.
"""

from __future__ import annotations

import sys

import pulumi
from pulumi.provider.experimental import component_provider_host
from pulumi.provider.experimental.component import ComponentProvider

PACKAGE = "registry-stack"
"""The package name: the `registry-stack:index:<Component>` type tokens and the consumer's SDK name."""


def components() -> list[type[pulumi.ComponentResource]]:
    """The components the package serves."""
    from .daemon_mirror import DaemonMirror
    from .registry_stack import RegistryStack
    from .tls import Tls

    return [RegistryStack, Tls, DaemonMirror]


def launched_as_plugin() -> bool:
    """True when a Pulumi CLI started this process as a plugin, not as a Pulumi program."""
    return pulumi.runtime.settings.get_monitor() is None


def provider() -> ComponentProvider:
    """The provider the host serves (its schema and `construct`), built as the host builds it."""
    return ComponentProvider(components(), PACKAGE)


def serve_if_launched_as_plugin() -> None:
    """Serve the components until the engine stops the plugin, then exit; else return at once."""
    if not launched_as_plugin():
        return
    component_provider_host(components(), name=PACKAGE)
    sys.exit(0)
