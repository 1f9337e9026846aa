"""The relay core both halves share: accept, admit, connect the next hop, copy both ways."""
