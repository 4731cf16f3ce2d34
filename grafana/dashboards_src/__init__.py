"""The dashboards' source: :mod:`.panels` (the builders) and one module per dashboard.

``grafana/build_dashboards.py`` renders them to ``grafana/dashboards/*.json``.
"""
