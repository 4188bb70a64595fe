"""`docsam`, for a test run under torchrun, with every rank but rank 0 taking `DOCSAM_TEST_WRITE_SECONDS` more
to write each page: when a signal stops the run, those ranks are still writing pages that rank 0 has long
finished its own."""

import os
import time

from docsam_cli.app import main
from docsam_cli.writers.page_outputs import PageWriter

write = PageWriter.write


def slow_write(self, *args, **kwargs):
    if os.environ["RANK"] != "0":
        time.sleep(float(os.environ["DOCSAM_TEST_WRITE_SECONDS"]))
    return write(self, *args, **kwargs)


PageWriter.write = slow_write
main()
