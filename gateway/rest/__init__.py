"""The REST API under ``/v1`` (docs/rest.md): resources, bulk writes, the Yjs document.

:func:`gateway.rest.mount.add_rest_api` serves it on a gateway's application. This
package's own import loads nothing, so its small modules (``problems``, ``inputs``)
can be used by the gateway's middlewares without pulling in the whole API.
"""
