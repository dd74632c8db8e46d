"""The output folder: every file operation through Beam's ``FileSystems``, its layout, its lock.

* :mod:`.files`: read, write, list, move and delete on local disk, ``gs://`` and ``s3://`` alike
  (nothing else in the package calls ``pathlib``/``os``/``shutil`` on an output folder);
* :mod:`.layout`: where the pieces of an output folder live, and the manifest that names the live version;
* :mod:`.lock`: the one-writer lock of an output folder.
"""

from counterpoint.storage.files import *  # noqa: F401,F403 - the flat API every caller uses
from counterpoint.storage.files import configured_options  # noqa: F401
from counterpoint.storage.layout import (  # noqa: F401
    FORMAT,
    FORMAT_VERSION,
    LOCK_FILE,
    MANIFEST_FILE,
    VERSIONS_DIR,
    DatasetLayout,
    Manifest,
    OutputLayout,
    StagingLayout,
    now_iso,
    read_manifest,
    write_manifest,
)
from counterpoint.storage.lock import OutputLock, create_exclusive  # noqa: F401
