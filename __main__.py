"""registry-stack: a private build registry and a pull-through cache behind one TLS front."""

import pulumi

from components import client_configs, renderers
from components.daemon_mirror import daemon_mirrors_for
from components.plugin import serve_if_launched_as_plugin
from components.registry_stack import RegistryStack
from components.settings import load_settings, read_pulumi_config

serve_if_launched_as_plugin()  # started as the component package's plugin: serve, never run the program

settings = load_settings(*read_pulumi_config())
stack = RegistryStack("registry", settings)
mirrors = daemon_mirrors_for(stack, settings)

pulumi.export("buildUrl", stack.build_url)
pulumi.export("cacheUrl", stack.cache_url)
pulumi.export("cacheUrls", stack.cache_urls)
pulumi.export("unifiedUrl", stack.unified_url)
pulumi.export("caCertPem", stack.ca_cert_pem)
pulumi.export("hostnames", list(settings.hostnames))
pulumi.export("hostsLine", renderers.hosts_line(settings))
pulumi.export("daemonJson", renderers.daemon_json_snippet(settings))
pulumi.export("dockerLogin", renderers.docker_login_command(settings))
for name, text in client_configs.stack_outputs(settings).items():  # podman/CRI-O, k3s/RKE2, BuildKit
    pulumi.export(name, text)
pulumi.export("daemonMirrors", {m.host: {"configured": m.configured, "report": m.report} for m in mirrors})
