from .two_stage_warmup import TwoStageWarmupPolyLR, two_stage_warmup_poly

__all__ = ['TwoStageWarmupPolyLR', 'two_stage_warmup_poly']
