"""Bytes between sockets: endpoints, connecting and listening, and the pump that copies.

The lowest layer that does I/O. It knows nothing of links, halves or Windows' tools; the
Windows named pipe is here because it is one more kind of stream to connect to.
"""
