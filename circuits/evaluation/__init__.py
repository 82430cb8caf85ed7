

import circuits.evaluation.benchmarks  # noqa: F401, E402 - registers the benchmarks' measures (measures.spec_of reads them)
