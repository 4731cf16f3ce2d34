"""Kept for old imports: the minimal HTTP server now lives in ``consumer.http.httpserver``."""

from consumer.http.httpserver import Handler, HttpServer, Reply, Request

__all__ = ["Handler", "HttpServer", "Reply", "Request"]
