"""The papers behind the metrics, as BibTeX (``odbench cite``).

One entry per paper; a metric's catalog entry (:mod:`odbench.metrics.catalog`, ``citation``)
names its entry key.  ``acc``, ``iou`` and ``ber`` are textbook quantities with no one paper;
they cite none.
"""

from __future__ import annotations

BIBTEX: dict[str, str] = {
    "achanta2009frequency": """@inproceedings{achanta2009frequency,
  title={Frequency-tuned salient region detection},
  author={Achanta, Radhakrishna and Hemami, Sheila and Estrada, Francisco and S{\\"u}sstrunk, Sabine},
  booktitle={CVPR},
  pages={1597--1604},
  year={2009}
}""",
    "perazzi2012saliency": """@inproceedings{perazzi2012saliency,
  title={Saliency filters: Contrast based filtering for salient region detection},
  author={Perazzi, Federico and Kr{\\"a}henb{\\"u}hl, Philipp and Pritch, Yael and Hornung, Alexander},
  booktitle={CVPR},
  pages={733--740},
  year={2012}
}""",
    "fan2017structure": """@inproceedings{fan2017structure,
  title={Structure-measure: A new way to evaluate foreground maps},
  author={Fan, Deng-Ping and Cheng, Ming-Ming and Liu, Yun and Li, Tao and Borji, Ali},
  booktitle={ICCV},
  pages={4548--4557},
  year={2017}
}""",
    "fan2018enhanced": """@inproceedings{fan2018enhanced,
  title={Enhanced-alignment Measure for Binary Foreground Map Evaluation},
  author={Fan, Deng-Ping and Gong, Cheng and Cao, Yang and Ren, Bo and Cheng, Ming-Ming and Borji, Ali},
  booktitle={IJCAI},
  pages={698--704},
  year={2018}
}""",
    "margolin2014evaluate": """@inproceedings{margolin2014evaluate,
  title={How to evaluate foreground maps?},
  author={Margolin, Ran and Zelnik-Manor, Lihi and Tal, Ayellet},
  booktitle={CVPR},
  pages={248--255},
  year={2014}
}""",
    "dice1945measures": """@article{dice1945measures,
  title={Measures of the amount of ecologic association between species},
  author={Dice, Lee R.},
  journal={Ecology},
  volume={26},
  number={3},
  pages={297--302},
  year={1945}
}""",
    "fawcett2006introduction": """@article{fawcett2006introduction,
  title={An introduction to ROC analysis},
  author={Fawcett, Tom},
  journal={Pattern Recognition Letters},
  volume={27},
  number={8},
  pages={861--874},
  year={2006}
}""",
    "deselaers2012weakly": """@article{deselaers2012weakly,
  title={Weakly supervised localization and learning with generic knowledge},
  author={Deselaers, Thomas and Alexe, Bogdan and Ferrari, Vittorio},
  journal={International Journal of Computer Vision},
  volume={100},
  number={3},
  pages={275--293},
  year={2012}
}""",
    "lin2014microsoft": """@inproceedings{lin2014microsoft,
  title={Microsoft {COCO}: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona, Pietro and Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle={ECCV},
  pages={740--755},
  year={2014}
}""",
}
