"""Launches gcp-storage-emulator with two fixes the skyx test suite needs.

Run with the emulator's own virtualenv python, with the emulator's usual arguments:
    python deploy/gcs_emulator.py start -H 127.0.0.1 --port 9023 --in-memory

What it changes, and why (nothing else is touched):

1. Connections are accepted by a thread each, with a deep listen backlog, while request
   handlers still run one at a time. The emulator serves with http.server.HTTPServer: one
   connection at a time and socketserver's backlog of 5, so clients that upload parts in
   parallel (16 in our suite, as any transfer tool does) overflow the backlog and get their
   connections reset. Its storage is not thread-safe (it serialises its metadata dict while
   other writes change it), so handlers are serialised with one lock.

2. Empty media uploads. For an empty body the emulator's Request.data is None and the media
   upload handler crashes on len(None), so a zero-byte object cannot be written. Real GCS
   accepts empty objects; here an empty simple/media upload gets b"" as its data.

3. Sizes as strings. GCS's JSON API encodes int64 fields such as `size` as strings, and the
   emulator does so for uploads, but its compose handler returns the size as a number, which
   clients that follow the API (gcloud-storage) cannot decode. Object resources are built with
   the size as a string everywhere.

4. No metadata rewrite per request in memory. After every write the emulator serialises the
   metadata of every object (json.dumps, indented) into a ".meta" file so a restarted emulator
   finds its objects; with --in-memory nothing survives a restart anyway, and the rewrite makes
   each write O(objects): 10,000 small uploads slow to ~5 per second. With --in-memory the
   rewrite is skipped (the metadata lives in the emulator's dicts, as before).

5. TCP_NODELAY on accepted connections. http.server writes a response's headers and body in
   separate small segments; with Nagle on, the body waits for the client's delayed ACK, about
   20-40 ms per request on loopback (measured: 50 uploads/s with the emulator's CPU idle).

6. Rewrite as the JSON API documents it (cloud.google.com/storage/docs/json_api/v1/objects/
   rewrite): `sourceGeneration` selects that generation of the source (404 when it is not the
   current one: this emulator keeps no old generations), and an object resource in the request
   body is the destination's metadata. The emulator ignored both, copying the latest version
   with the source's metadata.

7. `--require-tokens DIR` (an option of this launcher, not the emulator's): every request must
   carry `Authorization: Bearer TOKEN` for a token a metadata server stand-in issued
   (deploy/contracts/vmguest.py writes each as DIR/TOKEN: the service account and its scopes),
   answered as GCS answers: 401 without one or with one nobody issued, 403 when the token's
   scopes do not cover the request (reads: devstorage.read_only and up; writes: read_write,
   full_control, cloud-platform). Each request let through is logged with its account, so a
   test can tell who wrote what. Without the option the emulator is anonymous, as before.
"""
import json
import os
import re
import socket
import sys
import threading
from http import HTTPStatus
from http import server as http_server

import gcp_storage_emulator.server as emulator
from gcp_storage_emulator.handlers import objects


class ThreadingServer(http_server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def get_request(self):
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


emulator.server = type(sys)("patched_http_server")
emulator.server.__dict__.update(http_server.__dict__)
emulator.server.HTTPServer = ThreadingServer

_media_upload = objects._media_upload


def media_upload_allowing_empty(request, response, storage):
    if request.data is None:
        request._data = b""
    return _media_upload(request, response, storage)


objects._media_upload = media_upload_allowing_empty

_make_object_resource = objects._make_object_resource


def object_resource_with_string_size(base_url, bucket, name, content_type, length, *rest, **kw):
    return _make_object_resource(base_url, bucket, name, content_type, str(length), *rest, **kw)


objects._make_object_resource = object_resource_with_string_size

if "--in-memory" in sys.argv:
    from gcp_storage_emulator import storage as _storage

    _storage.Storage._write_config_to_file = lambda self: None

_handler_lock = threading.Lock()


_rewrite = objects.rewrite
# The destination fields an object resource in a rewrite's body sets (the rest are the
# service's).
_REWRITE_FIELDS = ("contentType", "contentEncoding", "contentLanguage", "contentDisposition",
                   "cacheControl", "metadata")


def rewrite_as_documented(request, response, storage, *args, **kwargs):
    wanted = request.query.get("sourceGeneration")
    if wanted:
        try:
            current = storage.get_file_obj(request.params["bucket_name"],
                                           request.params["object_id"])
        except objects.NotFound:
            current = None
        if current is None or str(current.get("generation")) != wanted[0]:
            response.status = HTTPStatus.NOT_FOUND
            response.json({"error": {"code": 404, "message": "No such object generation"}})
            return
    _rewrite(request, response, storage, *args, **kwargs)
    body = request.data
    if response.status != HTTPStatus.OK or not isinstance(body, dict) or not body:
        return
    dest = storage.get_file_obj(request.params["dest_bucket_name"],
                                request.params["dest_object_id"])
    for field in _REWRITE_FIELDS:
        if field in body:
            dest[field] = body[field]
        elif field != "contentType":
            dest.pop(field, None)
    storage.patch_object(request.params["dest_bucket_name"],
                         request.params["dest_object_id"], dest)
    size = str(dest["size"])
    response.json({"kind": "storage#rewriteResponse", "totalBytesRewritten": size,
                   "objectSize": size, "done": True, "resource": dest})


for _regex, _handlers in emulator.HANDLERS:
    for _method, _handler in list(_handlers.items()):
        if _handler is _rewrite:
            _handlers[_method] = rewrite_as_documented


def _take_option(name):
    """Removes `name VALUE` from the command line (the emulator's parser would refuse it)."""
    if name not in sys.argv:
        return None
    i = sys.argv.index(name)
    if i + 1 >= len(sys.argv):
        sys.exit(f"gcs_emulator.py: {name} needs a value")
    value = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    return value


_TOKENS = _take_option("--require-tokens")
_READ_SCOPES = {"devstorage.read_only", "devstorage.read_write", "devstorage.full_control",
                "cloud-platform", "cloud-platform.read-only"}
_WRITE_SCOPES = {"devstorage.read_write", "devstorage.full_control", "cloud-platform"}


def _refuse(handler, code, reason, message):
    # The request's body is read and dropped first: a connection closed with unread input is
    # reset, and the client would see the reset, not the answer.
    handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    body = json.dumps({"error": {"code": code, "message": message, "errors": [
        {"message": message, "domain": "global", "reason": reason}]}}).encode()
    handler.send_response(code)
    if code == 401:
        handler.send_header("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')
    handler.send_header("Content-Type", "application/json; charset=UTF-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _authorised(handler):
    """Whether the request may go on (answered here when not), as GCS decides it for a private
    bucket."""
    got = handler.headers.get("Authorization", "")
    m = re.fullmatch(r"Bearer ([A-Za-z0-9._-]{1,512})", got)
    if not got:
        _refuse(handler, 401, "required",
                "Anonymous caller does not have storage access to the Google Cloud Storage "
                "bucket. Permission denied on resource (or it may not exist).")
        return False
    issued = None
    if m and not m.group(1).startswith("."):
        try:
            with open(os.path.join(_TOKENS, m.group(1))) as f:
                issued = json.load(f)
            issued = {"email": str(issued["email"]), "scopes": list(issued["scopes"])}
        except (OSError, ValueError, KeyError, TypeError):
            issued = None
    if issued is None:
        _refuse(handler, 401, "authError", "Invalid Credentials")
        return False
    scopes = {s.rsplit("/", 1)[-1] for s in issued["scopes"]}
    wanted = _READ_SCOPES if handler.command in ("GET", "HEAD") else _WRITE_SCOPES
    if not scopes & wanted:
        _refuse(handler, 403, "insufficientPermissions",
                "Provided scope(s) are not authorized")
        return False
    print(f"gcs: {handler.command} {handler.path.split('?')[0]} as {issued['email']}",
          file=sys.stderr, flush=True)
    return True


def serialised(method):
    def run(self):
        if _TOKENS is not None and not _authorised(self):
            return None
        with _handler_lock:
            return method(self)

    return run


for _name in ("do_GET", "do_POST", "do_PUT", "do_PATCH", "do_DELETE", "do_HEAD"):
    if hasattr(emulator.RequestHandler, _name):
        setattr(emulator.RequestHandler, _name, serialised(getattr(emulator.RequestHandler, _name)))

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    sys.exit(main())
