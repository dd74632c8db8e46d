"""Everything that happens to a written dataset (import floor 3: below pipelines, above validation).

* :mod:`.summary`  the typed run summary and the accounting check;
* :mod:`.verdicts` the one reader of the gate's verdict, bound to each shard's size and sha256;
* :mod:`.publish`  ownership, the lock, and the one publish procedure of runs and exports;
* :mod:`.card`, :mod:`.report`, :mod:`.hub`: the dataset card, the HTML report, the Hub upload;
* :mod:`.export`   trainer-ready configs published through the same procedure.

Every function takes a :class:`counterpoint.storage.DatasetLayout` (or ``OutputLayout``).
"""
