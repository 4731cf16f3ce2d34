"""The failure path: what happens to a record that fails, and the tools to look at it and send it back.

::

    a record fails in its flow handler
        │
        ▼
    retry policy (consumer.runtime: retry with backoff) ── a destination's outage is no record's failure:
        │ failed for good                                  the record waits; outages.report_outages writes the
        │                                                  outage and its recovery to the error log, once each
        ▼
    error log ─────────── errorlog.ErrorLog: a JSON record keyed by the transfer, on the error-log topic
        │
        ▼
    dead letter ───────── deadletters.DeadLetterPublisher: the record byte for byte, with its failure context
        │                 in headers (headers), in the partition of its source record
        ▼
    list / show ───────── scan.TopicScan reads to the end; deadletters.DeadLetter decodes; filters select;
        │                 output prints (``ipaas-klaviyo dlq list|show``, ``ipaas-klaviyo errors``)
        ▼
    replay ────────────── replay.replay: republish to the source topic, or run through the service's dispatcher
                          (built by the caller); a letter that fails again takes this path again, history kept

Modules: ``headers`` (the dead-letter header names, encoding and decoding), ``deadletters`` (writing dead
letters and reading one back as ``DeadLetter``), ``errorlog`` (writing the error log and reading it back),
``scan`` (reading topics to their end), ``filters`` (which dead letters and error-log records), ``output``
(tables, JSON, progress bar), ``replay`` and ``outages``. Nothing here imports the composition root
(``consumer.app``) or the command line (``consumer.cli``); import the modules themselves (this package re-exports
nothing).
"""
