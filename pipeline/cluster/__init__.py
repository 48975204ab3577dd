"""Scale-out on a Ray cluster: ``pomona generate --ray ADDRESS`` and ``pomona annotate --ray ADDRESS``.

- :mod:`.connect`: ADDRESS (``local``, ``auto``, ``HOST:PORT``, ``ray://HOST:PORT``, or ``RAY_ADDRESS``) with
  short timeouts and one-line errors;
- :mod:`.store`: the output, a folder every node sees or an fsspec URL, written file by file, atomically;
- :mod:`.render`: procedural rendering as stateless tasks;
- :mod:`.label`: the model-backed labellers as actors that load their models once;
- :mod:`.progress`: one progress bar over the cluster and the per-node summary.

Ray is optional (``pip install 'pomona[cluster]'``); nothing here is imported without ``--ray``.
"""
