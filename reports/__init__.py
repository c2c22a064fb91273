"""What is shown: renderers that read only results and display the verdict.

Every report draws off-screen: matplotlib's Agg backend is chosen here, once, before any report
module imports pyplot (importing ``reports.<anything>`` runs this first).
"""

import matplotlib

matplotlib.use("Agg")
