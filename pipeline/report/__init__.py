"""``vidbatch report``: one self-contained HTML page about a finished job (or a training
run), with Plotly charts and thumbnails, that opens from disk with no server."""
