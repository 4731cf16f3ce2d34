"""Development tooling beside the service: look-alikes of the systems it talks to, the demo and a local broker.

``simulators.klaviyo`` (the Klaviyo simulator, with Klaviyo's vendored OpenAPI contract), ``simulators.ipaas``
(the iPaaS.com simulator), ``simulators.httpserver`` and ``simulators.scaffold`` (the HTTP server and the
scaffolding both simulators share), ``simulators.demo`` (``ipaas-klaviyo demo``) and ``simulators.localkafka``
(a single-node KRaft broker without Docker).

The dependency goes one way: this package may import ``consumer`` (its models, settings, endpoint table), and
``consumer`` never imports this package, except lazily inside the development commands of ``consumer.cli``
(``simulate``, ``kafka``, ``demo``). The service's run path works without it.
"""
