"""The benchmark harness's parts: dataset preparation and the Table 1/2 report."""
