import torch
from helpers import mma_model
from peft import PeftModel
from transformers import LlamaForCausalLM

from transformers_lavin.testing_utils import tiny_lavin_config


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_lavin_config().text_config).eval()


def test_mma_on_a_plain_causal_lm_trains_saves_and_merges(tmp_path):
    input_ids = torch.randint(4, 200, (2, 12))
    base = tiny_llama()
    with torch.no_grad():
        base_logits = base(input_ids=input_ids).logits.clone()
    model = mma_model(base, randomize=False)
    assert model.peft_config["default"].modules_to_save is None  # a plain LLM has no projector to save
    with torch.no_grad():
        assert torch.equal(model(input_ids=input_ids).logits, base_logits)

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=input_ids).logits
    assert not torch.allclose(trained, base_logits)

    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=input_ids).logits, trained)
    generated = reloaded.generate(input_ids=input_ids[:1], max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 16)

    merged = reloaded.merge_and_unload(modality="text")
    assert type(merged) is LlamaForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=input_ids).logits, trained, rtol=0, atol=1e-5)
