"""Credits and licences of the public datasets a model was trained or evaluated on (for MODEL_CARD.md)."""
from __future__ import annotations

CREDITS = {
    "cssrs_posts": "C-SSRS Reddit posts (AmanuelF/Suicide-Risk-Assessment-using-Reddit). Gaur et al., Knowledge-aware "
                   "assessment of severity of suicide risk for early intervention, WWW 2019. No licence file: research use.",
    "sdcnl": "SDCNL (ayaanzhaque/SDCNL). Haque, Reddi, Giallanza, Deep Learning for Suicide and Depression "
             "Identification with Unsupervised Label Correction, ICANN 2021. No licence file: research use.",
    "dreaddit": "Dreaddit (via ShirCohen1/Stress_Analysis_in_Social_Media). Turcan & McKeown, Dreaddit: A Reddit "
                "Dataset for Stress Analysis in Social Media, LOUHI 2019. No licence file: research use.",
    "cadec": "CADEC info-need annotations (roysoumya/knowledge-aware-med-classification). Roy et al., CIKM 2021; "
             "texts from the CADEC corpus (CSIRO). No licence file: research use.",
    "ichi2016": "ICHI 2016 health-forum questions (roysoumya/knowledge-aware-med-classification; rakshajalan/ECIR-2018). "
                "Roy et al., CIKM 2021. No licence file: research use.",
    "constraint2021": "CONSTRAINT-2021 COVID-19 fake news (yjbang/Model-Generalization-for-Fact-Checking, MIT). "
                      "Bang et al., Model Generalization on COVID-19 Fake News Detection, CONSTRAINT@AAAI 2021.",
    "covid_rumor": "COVID-19 rumor dataset (MickeysClubhouse/COVID-19-rumor-dataset, MIT). Cheng et al., "
                   "Frontiers in Psychology 12 (2021).",
    "tubespam": "YouTube Spam Collection (via regularized-dp/regularized-data-programming). Alberto, Lochter & "
                "Almeida, TubeSpam, ICMLA 2015. UCI lists CC BY 4.0.",
    "sms_spam": "SMS Spam Collection (via hamzaaacodes/sms-spam-collection). Almeida, Gomez Hidalgo & Yamakami, "
                "DocEng 2011. UCI lists CC BY 4.0.",
    "selfmed_claims": "Self-medication claims on Reddit (properexit/self-medication-claim-detection). Kale, Palh, "
                      "Choudhari, University of Potsdam project report. No licence file: research use.",
    "health_misinfo_reddit": "Health misinformation Reddit dataset (AnirbanSahaAnik/health-misinformation-reddit-dataset, "
                             "CC BY 4.0; labels changed: relabelled by hand). Anik et al., COLM 2025.",
    "peptides_nootropics_reddit": "r/Peptides and r/Nootropics posts (OrMullerHahitti/text-in-data). No licence file: "
                                  "research use, cite the repository.",
    "opiatesrecovery_met": "r/OpiatesRecovery comments (Nish-19/Reddit_Drug_Classifier). No licence file: research "
                           "use, cite the repository.",
    "isotretinoin_reddit": "Isotretinoin and skin-care Reddit (om-894/isotretinoin_sentiment_analysis, MIT).",
    "glp1_ozempic_reddit": "GLP-1 / Ozempic Reddit comments (jonathanmshelia/ozempic-diabetes-mellitus-stochastic-analysis, MIT).",
}


def credits_for(sources: list[str]) -> list[tuple[str, str]]:
    """(source, credit line) for each source; an unknown source says so instead of inventing a citation."""
    return [(s, CREDITS.get(s, "no credit recorded: add it to classifiers/credits.py")) for s in sources]
