"""Install mmeomt: ``pip install -e .`` or ``mim install -e .``.

Requirements come from ``requirements/*.txt`` (as in mmdet/mmseg).  ``mmeomt/.mim`` exposes the
configs, tools and model index to ``mim`` (``mim train mmeomt ...``, ``mim download mmeomt``):
symlinks for an editable install, copies for a wheel or sdist.
"""
import os
import os.path as osp
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'demo', 'model-index.yml')


def read_version():
    with open(osp.join(ROOT, 'mmeomt', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def parse_requirements(name):
    """Requirement lines of ``requirements/<name>.txt``, without comments or blank lines."""
    with open(osp.join(ROOT, 'requirements', name + '.txt'), encoding='utf-8') as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def add_mim_extension():
    """Populate ``mmeomt/.mim`` so that mim finds configs, tools and the model index."""
    if {'develop', 'editable_wheel'} & set(sys.argv):
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'build_py'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim_dir = osp.join(ROOT, 'mmeomt', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(ROOT, name)
        dst = osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmeomt',
        version=read_version(),
        description='EoMT (Encoder-only Mask Transformer) for OpenMMLab: panoptic, instance and '
        'semantic segmentation with a plain ViT',
        long_description=open(osp.join(ROOT, 'README.md'), encoding='utf-8').read(),
        long_description_content_type='text/markdown',
        keywords='computer vision, segmentation, vision transformer, openmmlab',
        packages=find_packages(include=('mmeomt', 'mmeomt.*')),
        include_package_data=True,
        package_data={'mmeomt': ['.mim/**/*', '.mim/*']},
        python_requires='>=3.10',
        license='Apache License 2.0',
        classifiers=[
            'License :: OSI Approved :: Apache Software License',
            'Programming Language :: Python :: 3',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        install_requires=parse_requirements('runtime'),
        extras_require={
            'mim': parse_requirements('mminstall'),
            'tests': parse_requirements('tests'),
            'optional': parse_requirements('optional'),
            # ONNX export and the ONNX Runtime backend (imported only when used)
            'deploy': parse_requirements('deploy'),
        },
        zip_safe=False,
    )
