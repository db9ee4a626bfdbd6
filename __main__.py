"""registry-stack: a private build registry and a pull-through cache behind one TLS front.

The program reads the stack's config into RegistryStack's args (components/stack_config.py)
and exports the component's outputs; everything else happens in the components.
"""

import pulumi

from components.plugin import serve_if_launched_as_plugin
from components.registry_stack import RegistryStack
from components.stack_config import registry_stack_args

serve_if_launched_as_plugin()  # started as the component package's plugin: serve, never run the program

stack = RegistryStack("registry", registry_stack_args())

pulumi.export("buildUrl", stack.build_url)
pulumi.export("cacheUrl", stack.cache_url)
pulumi.export("cacheUrls", stack.cache_urls)
pulumi.export("unifiedUrl", stack.unified_url)
pulumi.export("caCertPem", stack.ca_cert_pem)
pulumi.export("hostnames", stack.hostnames)
pulumi.export("hostsLine", stack.hosts_line)
pulumi.export("daemonJson", stack.daemon_json)
pulumi.export("dockerLogin", stack.docker_login)
pulumi.export("podmanRegistriesConf", stack.podman_registries_conf)
pulumi.export("k3sRegistriesYaml", stack.k3s_registries_yaml)
pulumi.export("buildkitdToml", stack.buildkitd_toml)
pulumi.export("metricsUrl", stack.metrics_url)
pulumi.export("prometheusScrapeConfig", stack.prometheus_scrape_config)
pulumi.export("prewarmFailures", stack.prewarm_failures)
pulumi.export("daemonMirrors", {m.host: {"configured": m.configured, "report": m.report} for m in stack.daemon_mirrors})
