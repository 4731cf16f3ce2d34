"""The topic catalog, ``topics.yaml``, as package data: installed with the package, found the same way everywhere.

Nothing to import: ``consumer.topics`` reads the file with ``importlib.resources.files("topics")``, so a checkout
(editable install), a wheel and the service image all find it without a path setting.
"""
