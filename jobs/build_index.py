"""spark-submit entry point of a checkout: the build job that ships in the package
(``curindex.pipeline.job``; ``curindex build`` submits that file from an installed package).

    spark-submit [--master URL] jobs/build_index.py --conf FILE [--version ID] [--publish]
        [--base VERSION] [--stage STAGE] [--summary FILE]
"""

import sys

from curindex.pipeline.job import main

if __name__ == "__main__":
    sys.exit(main())
