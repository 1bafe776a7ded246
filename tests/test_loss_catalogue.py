"""get_loss knows every dense-embedding loss that sentence-transformers exports: a release that adds one fails here."""
import pytest


def sentence_transformers_losses() -> list[str]:
    torch = pytest.importorskip("torch")
    from sentence_transformers.sentence_transformer import losses

    return sorted(name for name in dir(losses) if not name.startswith("_")
                  and isinstance(getattr(losses, name), type) and issubclass(getattr(losses, name), torch.nn.Module))


def test_sentence_transformers_exports_the_losses_we_expect():
    names = sentence_transformers_losses()
    assert len(names) >= 29 and "MultipleNegativesRankingLoss" in names and "TripletDistanceMetric" not in names


@pytest.mark.parametrize("name", sentence_transformers_losses())
def test_get_loss_accepts_every_sentence_transformers_loss(name):
    from jaxsbert.losses import LOSSES, get_loss

    assert name in LOSSES, f"sentence-transformers' {name} has no jaxsbert counterpart"
    try:
        loss = get_loss(name)
    except (ValueError, TypeError) as e:      # a loss with a required argument (MatryoshkaLoss's inner loss, a guide)
        assert "unknown loss" not in str(e), e
    else:
        assert loss.name == name
