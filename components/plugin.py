"""The component package: RegistryStack and Tls for Pulumi programs in any language.

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
from typing import Any

import pulumi
from pulumi.provider import main as serve_provider
from pulumi.provider.experimental.analyzer import ComponentDefinition, PropertyType
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.runtime.sync_await import _sync_await

from .config_schema import ConfigError, is_secret, ref

PACKAGE = "registry-stack"
"""The package name: the `registry-stack:index:<Component>` type tokens and the consumer's SDK name."""


def components() -> list[type[pulumi.ComponentResource]]:
    """The components the package serves.

    RegistryStack creates a DaemonMirror per `mirrorHosts` entry itself; DaemonMirror is also
    served on its own (DaemonMirrorArgs), for hosts a consumer manages elsewhere.
    """
    from .daemon_mirror import DaemonMirror
    from .registry_stack import RegistryStack
    from .tls import Tls

    return [RegistryStack, Tls, DaemonMirror]


def launched_as_plugin() -> bool:
    """True when a Pulumi CLI started this process as a plugin, not as a Pulumi program."""
    return pulumi.runtime.settings.get_monitor() is None


class RegistryStackProvider(ComponentProvider):
    """Pulumi's component provider, handing each component the consumer's values as it checks them.

    The components check every argument before they create anything, so they take plain
    values. The provider server wraps some of the consumer's values in Outputs (a secret, a
    value that depends on a resource: provider/server.py `_select_value`) and hands whole
    numbers over as floats (component.py means to convert them, `int(input_val)`, then keeps
    the float). Here a value the request already carries is unwrapped, and a whole float of
    an integer input becomes an int. A secret is unwrapped only for the inputs the component
    keeps secret itself (users, upstreamCredentials, mirrorSshPrivateKey: it hashes or wraps
    them in `Output.secret`); a secret anywhere else is refused rather than made plain. A value
    not known yet (a preview, with a resource of the consumer's program still to be created)
    is refused, naming the key.

    Unwrapping drops the value's dependencies, which is safe: the engine sends a value only
    once the resources it depends on exist, so the component's children come after them.
    """

    def map_inputs(self, inputs: Any, component_def: ComponentDefinition) -> Any:
        mapped = super().map_inputs(inputs, component_def)
        return {
            name: _plain_value(component_def.name, name, value, component_def.inputs.get(name))
            for name, value in mapped.items()
        }


def _plain_value(component: str, name: str, value: Any, prop: Any) -> Any:
    if isinstance(value, pulumi.Output):
        value = _resolved(component, name, value)
    elif isinstance(value, list):
        value = [_resolved(component, name, item) if isinstance(item, pulumi.Output) else item for item in value]
    if prop is not None and prop.type == PropertyType.INTEGER and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _resolved(component: str, name: str, output: pulumi.Output[Any]) -> Any:
    """The value of an Output the request already carries; the Output itself when not known yet."""
    # The server built it from data already at hand, so nothing is waited for here.
    if not _sync_await(output.is_known()):
        raise ConfigError(
            f"{ref(name)} is not known yet (it comes from a resource this run creates): {component} "
            "checks every argument before it creates anything, so it needs the value itself; pass a "
            "plain value, or create that resource in an earlier `pulumi up`"
        )
    if _sync_await(output.is_secret()) and not (component == "RegistryStack" and is_secret(name)):
        raise ConfigError(
            f"{ref(name)} was passed as a secret, but {component} keeps only users, upstreamCredentials "
            f"and mirrorSshPrivateKey secret: pass {name} as a plain value"
        )
    return _sync_await(output.future())


def provider() -> ComponentProvider:
    """The provider the plugin serves (its schema and `construct`)."""
    return RegistryStackProvider(components(), PACKAGE)


def serve_if_launched_as_plugin() -> None:
    """Serve the components until the engine stops the plugin, then exit; else return at once.

    What pulumi.provider.experimental.component_provider_host does, with RegistryStackProvider.
    """
    if not launched_as_plugin():
        return
    serve_provider(provider(), sys.argv[1:])
    sys.exit(0)
