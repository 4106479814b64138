"""03.2: for each parent process, the distinct programs its children ran."""


def answer(df):
    return df.groupby("ppid")["filename"].unique()
